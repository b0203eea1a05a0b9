// The sample app a preview runs on the local cluster: one page that says which pull request and commit
// it was deployed for, so a person who opens a preview's URL sees which version answers.
//
// It reads what the deployment tells it through the environment (the sample manifests fill these in
// from the pod's own labels and annotations with the downward API):
//
//	PREVIEW_PR      the pull request's number
//	PREVIEW_COMMIT  the commit deployed
//	GREETING        a line of text (from the sample's ConfigMap)
//	PORT            where to listen (default 8080)
//
// `previews-sample --fail "<message>"` writes the message to stderr and exits 1 at once: a container
// that crashes at start, for the failure tests. `previews-sample --get <url>` fetches the URL, prints
// the status line and body, and exits 0 on a 2xx answer (a client for DNS and isolation checks, run
// with `kubectl exec`: the image has no shell).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"html/template"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Set at build time to the image's content hash (scripts/node).
var version = "dev"

type info struct {
	PR       string `json:"pr"`
	Commit   string `json:"commit"`
	Greeting string `json:"greeting"`
	Pod      string `json:"pod"`
	Version  string `json:"version"`
}

func current() info {
	return info{PR: os.Getenv("PREVIEW_PR"), Commit: os.Getenv("PREVIEW_COMMIT"), Greeting: os.Getenv("GREETING"),
		Pod: os.Getenv("HOSTNAME"), Version: version}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

var page = template.Must(template.New("page").Funcs(template.FuncMap{"short": short}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Preview of PR #{{.PR}}</title>
<style>body{font-family:system-ui,sans-serif;margin:3rem;color:#1f2328}code{background:#f6f8fa;padding:.1rem .3rem}</style>
</head><body>
<h1>Pull request #<span id="pr">{{.PR}}</span></h1>
<p>Commit <code id="commit" title="{{.Commit}}">{{short .Commit}}</code></p>
<p id="greeting">{{.Greeting}}</p>
<p><small>Served by pod <code id="pod">{{.Pod}}</code> · sample app {{.Version}}</small></p>
</body></html>
`))

func fetch(url string) int {
	client := http.Client{Timeout: 5 * time.Second}
	response, err := client.Get(url)
	if err != nil {
		fmt.Println(err)
		return 2
	}
	defer response.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(response.Body, 4096))
	fmt.Printf("%s\n%s\n", response.Status, body)
	if response.StatusCode/100 != 2 {
		return 1
	}
	return 0
}

func logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started := time.Now()
		next.ServeHTTP(w, r)
		if r.URL.Path != "/healthz" {
			log.Printf("%s %s %s (%s)", r.Method, r.URL.Path, r.Host, time.Since(started).Round(time.Microsecond))
		}
	})
}

func main() {
	fail := flag.String("fail", "", "write this to stderr and exit 1 at start")
	get := flag.String("get", "", "fetch this URL, print the answer and exit")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.LUTC)
	if *fail != "" {
		fmt.Fprintf(os.Stderr, "fatal: %s\n", *fail)
		os.Exit(1)
	}
	if *get != "" {
		os.Exit(fetch(*get))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/api/info", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(current())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = page.Execute(w, current())
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	server := &http.Server{Addr: ":" + port, Handler: logged(mux), ReadHeaderTimeout: 10 * time.Second}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
	}()
	i := current()
	log.Printf("sample app %s for PR #%s at commit %s listening on :%s", version, i.PR, short(i.Commit), port)
	if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
