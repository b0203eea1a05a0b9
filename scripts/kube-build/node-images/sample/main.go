// The sample app a preview runs on the local cluster: one page that says which pull request and commit
// it was deployed for, so a person who opens a preview's URL sees which version answers.
//
// It reads what the deployment tells it through the environment (the sample manifests fill these in
// from the pod's own labels and annotations with the downward API):
//
//	PREVIEW_PR      the pull request's number
//	PREVIEW_COMMIT  the commit deployed
//	GREETING        a line of text (from the sample's ConfigMap)
//	DATABASE_URL    the preview's database, when it has one: the page lists its rows
//	PORT            where to listen (default 8080)
//
// `previews-sample --migrate` is the migrate (and seed) command: it creates the table the page reads and
// seeds it, replacing what an earlier seed (or anyone) wrote there.
//
// `previews-sample --fail "<message>"` writes the message to stderr and exits 1 at once: a container
// that crashes at start, for the failure tests. `previews-sample --get <url>` fetches the URL, prints
// the status line and body, and exits 0 on a 2xx answer (a client for DNS and isolation checks, run
// with `kubectl exec`). `previews-sample --dial <host:port>` opens a TCP connection and says whether it could.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"html/template"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Set at build time to the image's content hash (scripts/node).
var version = "dev"

type info struct {
	PR       string   `json:"pr"`
	Commit   string   `json:"commit"`
	Greeting string   `json:"greeting"`
	Pod      string   `json:"pod"`
	Version  string   `json:"version"`
	Rows     []string `json:"rows,omitempty"`
	DBError  string   `json:"database_error,omitempty"`
}

func current() info {
	i := info{PR: os.Getenv("PREVIEW_PR"), Commit: os.Getenv("PREVIEW_COMMIT"), Greeting: os.Getenv("GREETING"),
		Pod: os.Getenv("HOSTNAME"), Version: version}
	if os.Getenv("DATABASE_URL") != "" {
		rows, err := readRows()
		if err != nil {
			i.DBError = err.Error()
		}
		i.Rows = rows
	}
	return i
}

func connect() (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
}

func readRows() ([]string, error) {
	conn, err := connect()
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	result, err := conn.Query(context.Background(), "SELECT body FROM sample_rows ORDER BY id")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(result, pgx.RowTo[string])
}

// migrate creates the page's table and seeds it; a second run (a reset, a push) seeds it again.
func migrate() int {
	conn, err := connect()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fatal: cannot reach the database: %v\n", err)
		return 1
	}
	defer conn.Close(context.Background())
	ctx := context.Background()
	statements := []string{
		"CREATE TABLE IF NOT EXISTS sample_rows (id serial PRIMARY KEY, body text NOT NULL)",
		"TRUNCATE sample_rows RESTART IDENTITY",
	}
	for _, statement := range statements {
		if _, err := conn.Exec(ctx, statement); err != nil {
			fmt.Fprintf(os.Stderr, "fatal: %s: %v\n", statement, err)
			return 1
		}
	}
	// The time tells one seed from the next (a reset seeds again).
	seed := []string{fmt.Sprintf("seeded at %s", time.Now().UTC().Format(time.RFC3339Nano)), "a second row"}
	for _, body := range seed {
		if _, err := conn.Exec(ctx, "INSERT INTO sample_rows (body) VALUES ($1)", body); err != nil {
			fmt.Fprintf(os.Stderr, "fatal: seeding: %v\n", err)
			return 1
		}
	}
	fmt.Printf("migrated and seeded %d rows: %s\n", len(seed), strings.Join(seed, "; "))
	return 0
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
{{if .DBError}}<p id="database-error">The database did not answer: {{.DBError}}</p>{{end}}
{{if .Rows}}<ul id="rows">{{range .Rows}}<li>{{.}}</li>{{end}}</ul>{{end}}
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
	migrateFlag := flag.Bool("migrate", false, "create and seed the page's table in DATABASE_URL, then exit")
	dial := flag.String("dial", "", "open a TCP connection to host:port, say whether it could, and exit")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.LUTC)
	if *fail != "" {
		fmt.Fprintf(os.Stderr, "fatal: %s\n", *fail)
		os.Exit(1)
	}
	if *get != "" {
		os.Exit(fetch(*get))
	}
	if *dial != "" {
		connection, err := net.DialTimeout("tcp", *dial, 5*time.Second)
		if err != nil {
			fmt.Println(err)
			os.Exit(2)
		}
		connection.Close()
		fmt.Printf("connected to %s\n", *dial)
		os.Exit(0)
	}
	if *migrateFlag {
		os.Exit(migrate())
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
