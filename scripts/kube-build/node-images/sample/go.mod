module previews.local/sample

go 1.24
