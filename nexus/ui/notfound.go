package ui

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"strings"
	"sync"
)

// NotFound answers what no route serves on the external listener: the
// favicon browsers ask for at /favicon.ico, an HTML 404 with the
// navigation for / and any unknown /ui path (a person is looking), and
// api, the JSON 404, for everything else.
func (s *Pages) NotFound(api http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/favicon.ico" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			serveFavicon(w, r)
		case p == "/" || p == "/ui" || strings.HasPrefix(p, "/ui/"):
			s.renderPage(w, r, http.StatusNotFound, "notfound", uiPage{Title: "Not found", Body: notFoundPage{Path: p,
				Root: p == "/"}})
		default:
			api(w, r)
		}
	}
}

// notFoundPage is the body of the HTML 404.
type notFoundPage struct {
	Path string
	// Root is set for "/": nothing is served there, but the pages are.
	Root bool
}

// favicon is a small rack drawn once: three sleds in a frame, in the
// pages' accent colour. Drawn rather than shipped as a file so there is
// no binary asset to keep.
var favicon = sync.OnceValue(func() []byte {
	const size = 32
	img := image.NewNRGBA(image.Rect(0, 0, size, size))
	frame := color.NRGBA{0x25, 0x57, 0xa7, 0xff}
	sled := color.NRGBA{0xe6, 0xf4, 0xea, 0xff}
	for y := 2; y < size-2; y++ {
		for x := 5; x < size-5; x++ {
			img.Set(x, y, frame)
		}
	}
	for i := range 3 {
		top := 6 + i*8
		for y := top; y < top+5; y++ {
			for x := 9; x < size-9; x++ {
				img.Set(x, y, sled)
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		panic(fmt.Sprintf("ui: favicon: %v", err)) // an in-memory image always encodes
	}
	return buf.Bytes()
})

func serveFavicon(w http.ResponseWriter, _ *http.Request) {
	b := favicon()
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "public, max-age=86400")
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
