package live

import (
	"embed"
	"io/fs"
	"net/http"
)

// web holds the page: index.html at the root, its script and style under
// live/. Everything is compiled in, so the page works on a Pi with no
// Internet access and no files beside the binary.
//
//go:embed web
var web embed.FS

// Page serves the live page: "/" and everything under "/live/". The page
// polls GET /status and GET /history on the same origin.
func Page() http.Handler {
	root, err := fs.Sub(web, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(root)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A new binary brings a new page: do not let a browser keep the
		// old script (embedded files carry no modification time).
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
