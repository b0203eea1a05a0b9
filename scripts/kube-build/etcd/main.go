// Command etcd is etcd's own server entry point, built from the Go module
// proxy. etcd's server module replaces its sibling modules with local paths,
// so 'go install go.etcd.io/etcd/server/v3@v' cannot build it; this wrapper
// module requires the published versions instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
