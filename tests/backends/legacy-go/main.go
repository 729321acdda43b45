// legacy-go: the "old" demo backend for strangler's tests.
//
// Go 1.19, standard library only, HTTP/1.1 with keep-alive. The API is the
// same as modern-rust's (see ../README.md); only small, documented details
// differ. Logs one startup line to stderr; set BACKEND_LOG=1 for one line per
// request.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

const (
	serviceName  = "legacy-go"
	maxDelayMs   = 60000
	echoBodyMax  = 64 << 10 // bodies up to this size are echoed back as text
	maxOrderBody = 1 << 20
	maxBytesN    = 2 << 30 // /bytes?n= upper bound: 2 GiB
	maxChunks    = 100000
	maxChunkSize = 1 << 20
	maxIntervalM = 60000
	maxID        = 1000
)

type user struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

type order struct {
	ID        int64   `json:"id"`
	UserID    int64   `json:"user_id"`
	Status    string  `json:"status"`
	Total     float64 `json:"total"`
	Currency  string  `json:"currency"`
	CreatedAt string  `json:"created_at"`
}

type searchResult struct {
	ID    int     `json:"id"`
	Title string  `json:"title"`
	Score float64 `json:"score"`
}

type searchResponse struct {
	Query   string         `json:"query"`
	Results []searchResult `json:"results"`
}

type echoResponse struct {
	Method    string            `json:"method"`
	Path      string            `json:"path"`
	Headers   map[string]string `json:"headers"`
	Body      string            `json:"body"`
	BodyBytes int64             `json:"body_bytes"`
}

// catalogue is searched by /api/search; result ids are index+1.
// Must stay identical to CATALOGUE in ../modern-rust/src/main.rs.
var catalogue = []string{
	"Red Shoes",
	"Blue Shirt",
	"Green Hat",
	"Red Scarf",
	"Black Boots",
	"White Socks",
	"Blue Jeans",
	"Yellow Raincoat",
	"Leather Belt",
	"Dark Red Sweater",
}

var nextOrderID int64 = 1000 // POST /api/orders hands out 1001, 1002, ...

var logRequests = os.Getenv("BACKEND_LOG") != ""

func main() {
	listen := flag.String("listen", "127.0.0.1:9001", "listen address HOST:PORT")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: listen %s: %v\n", serviceName, *listen, err)
		os.Exit(1)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(handle),
		ReadHeaderTimeout: 30 * time.Second,
	}
	fmt.Fprintf(os.Stderr, "%s listening on http://%s\n", serviceName, ln.Addr())
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", serviceName, err)
		os.Exit(1)
	}
}

// statusRecorder remembers the status for BACKEND_LOG and keeps Flush working.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = 200
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func handle(w http.ResponseWriter, r *http.Request) {
	if logRequests {
		rec := &statusRecorder{ResponseWriter: w}
		start := time.Now()
		defer func() {
			fmt.Fprintf(os.Stderr, "%s %s %s %d %s\n", serviceName, r.Method, r.RequestURI, rec.status, time.Since(start))
		}()
		w = rec
	}
	w.Header().Set("X-Served-By", serviceName)

	q := r.URL.Query()
	if d := q.Get("delay_ms"); d != "" {
		ms, err := strconv.ParseInt(d, 10, 64)
		if err != nil || ms < 0 {
			writeError(w, http.StatusBadRequest, "invalid delay_ms")
			return
		}
		if ms > maxDelayMs {
			ms = maxDelayMs
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		select {
		case <-t.C:
		case <-r.Context().Done(): // client went away
			t.Stop()
			return
		}
	}

	p := r.URL.EscapedPath()
	switch {
	case p == "/health":
		if methodIs(w, r, "GET") {
			writeJSON(w, 200, map[string]string{"status": "ok", "service": serviceName})
		}
	case p == "/api/users":
		if methodIs(w, r, "GET") {
			users := make([]user, 0, 5)
			for i := int64(1); i <= 5; i++ {
				users = append(users, makeUser(i))
			}
			writeJSON(w, 200, users)
		}
	case strings.HasPrefix(p, "/api/users/"):
		if methodIs(w, r, "GET") {
			if id, ok := parseID(w, strings.TrimPrefix(p, "/api/users/"), "user"); ok {
				writeJSON(w, 200, makeUser(id))
			}
		}
	case p == "/api/orders":
		switch r.Method {
		case "GET", "HEAD":
			orders := make([]order, 0, 3)
			for i := int64(1); i <= 3; i++ {
				orders = append(orders, makeOrder(i))
			}
			writeJSON(w, 200, orders)
		case "POST":
			createOrder(w, r)
		default:
			methodNotAllowed(w, "GET, HEAD, POST")
		}
	case strings.HasPrefix(p, "/api/orders/"):
		if methodIs(w, r, "GET") {
			if id, ok := parseID(w, strings.TrimPrefix(p, "/api/orders/"), "order"); ok {
				writeJSON(w, 200, makeOrder(id))
			}
		}
	case p == "/api/search":
		if methodIs(w, r, "GET") {
			writeJSON(w, 200, search(q.Get("q")))
		}
	case p == "/echo" || strings.HasPrefix(p, "/echo/"):
		echo(w, r)
	case p == "/stream":
		if methodIs(w, r, "GET") {
			stream(w, r, q)
		}
	case p == "/bytes":
		if methodIs(w, r, "GET") {
			sendBytes(w, r, q)
		}
	case strings.HasPrefix(p, "/status/"):
		status(w, strings.TrimPrefix(p, "/status/"))
	default:
		writeError(w, http.StatusNotFound, "not found")
	}
}

// methodIs accepts want (and HEAD for GET); otherwise answers 405.
func methodIs(w http.ResponseWriter, r *http.Request, want string) bool {
	if r.Method == want || (want == "GET" && r.Method == "HEAD") {
		return true
	}
	allow := want
	if want == "GET" {
		allow = "GET, HEAD"
	}
	methodNotAllowed(w, allow)
	return false
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
}

// writeJSON writes v compactly, without HTML escaping, with a Content-Length.
func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func isNumeric(s string) bool {
	if strings.HasPrefix(s, "-") {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseID: non-numeric -> 400; numeric but outside 1..1000 -> 404.
func parseID(w http.ResponseWriter, s, kind string) (int64, bool) {
	if !isNumeric(s) {
		writeError(w, http.StatusBadRequest, "invalid "+kind+" id")
		return 0, false
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 || id > maxID {
		writeError(w, http.StatusNotFound, kind+" not found")
		return 0, false
	}
	return id, true
}

func makeUser(id int64) user {
	return user{ID: id, Name: fmt.Sprintf("user-%d", id), Email: fmt.Sprintf("user%d@example.com", id)}
}

func now() string { return time.Now().UTC().Format(time.RFC3339) }

func makeOrder(id int64) order {
	return order{
		ID:        id,
		UserID:    (id-1)%5 + 1,
		Status:    "shipped",
		Total:     float64(id)*10 + 2.5,
		Currency:  "EUR",
		CreatedAt: now(),
	}
}

func createOrder(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOrderBody))
	if err != nil {
		if _, tooBig := err.(*http.MaxBytesError); tooBig {
			writeError(w, http.StatusRequestEntityTooLarge, "body too large")
		} else {
			writeError(w, http.StatusBadRequest, "cannot read body")
		}
		return
	}
	var in struct {
		UserID   *int64   `json:"user_id"`
		Status   *string  `json:"status"`
		Total    *float64 `json:"total"`
		Currency *string  `json:"currency"`
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(body, &in) != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON order")
		return
	}
	o := order{
		ID:        atomic.AddInt64(&nextOrderID, 1),
		UserID:    1,
		Status:    "pending",
		Total:     0,
		Currency:  "EUR",
		CreatedAt: now(),
	}
	if in.UserID != nil {
		o.UserID = *in.UserID
	}
	if in.Status != nil {
		o.Status = *in.Status
	}
	if in.Total != nil {
		o.Total = *in.Total
	}
	if in.Currency != nil {
		o.Currency = *in.Currency
	}
	w.Header().Set("Location", fmt.Sprintf("/api/orders/%d", o.ID))
	writeJSON(w, http.StatusCreated, o)
}

// search matches titles containing q case-insensitively (the correct
// behaviour; modern-rust's match is case-sensitive: the deliberate bug).
// Score in hundredths: 99 - 2*position - (len(title) - len(q)), at least 1.
func search(q string) searchResponse {
	lq := strings.ToLower(q)
	results := make([]searchResult, 0)
	for i, title := range catalogue {
		pos := strings.Index(strings.ToLower(title), lq)
		if pos < 0 {
			continue
		}
		hundredths := 99 - 2*pos - (len(title) - len(lq))
		if hundredths < 1 {
			hundredths = 1
		}
		results = append(results, searchResult{ID: i + 1, Title: title, Score: float64(hundredths) / 100})
	}
	sort.SliceStable(results, func(a, b int) bool { return results[a].Score > results[b].Score })
	return searchResponse{Query: q, Results: results}
}

func echo(w http.ResponseWriter, r *http.Request) {
	headers := make(map[string]string, len(r.Header)+2)
	for k, vs := range r.Header {
		headers[strings.ToLower(k)] = lossyUTF8([]byte(strings.Join(vs, ", ")))
	}
	// net/http moves these two out of r.Header; put them back.
	if r.Host != "" {
		headers["host"] = lossyUTF8([]byte(r.Host))
	}
	if len(r.TransferEncoding) > 0 {
		headers["transfer-encoding"] = strings.Join(r.TransferEncoding, ", ")
	}

	// Stream the body: count every byte, keep only the first echoBodyMax+1.
	var kept bytes.Buffer
	var total int64
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			total += int64(n)
			if room := echoBodyMax + 1 - kept.Len(); room > 0 {
				if n < room {
					room = n
				}
				kept.Write(buf[:room])
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, "cannot read body")
			return
		}
	}
	body := ""
	if total <= echoBodyMax {
		body = lossyUTF8(kept.Bytes())
	}
	writeJSON(w, 200, echoResponse{
		Method:    r.Method,
		Path:      lossyUTF8([]byte(r.RequestURI)),
		Headers:   headers,
		Body:      body,
		BodyBytes: total,
	})
}

// intParam: absent -> def; malformed or outside [0, max] -> 400.
func intParam(w http.ResponseWriter, q map[string][]string, name string, def, max int64) (int64, bool) {
	vs := q[name]
	if len(vs) == 0 || vs[0] == "" {
		return def, true
	}
	v, err := strconv.ParseInt(vs[0], 10, 64)
	if err != nil || v < 0 || v > max {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid %s (0..%d)", name, max))
		return 0, false
	}
	return v, true
}

func stream(w http.ResponseWriter, r *http.Request, q map[string][]string) {
	chunks, ok := intParam(w, q, "chunks", 5, maxChunks)
	if !ok {
		return
	}
	size, ok := intParam(w, q, "size", 16, maxChunkSize)
	if !ok {
		return
	}
	interval, ok := intParam(w, q, "interval_ms", 0, maxIntervalM)
	if !ok {
		return
	}
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(200)
	if flusher != nil {
		flusher.Flush() // headers out now, without Content-Length: chunked
	}
	chunk := bytes.Repeat([]byte{'x'}, int(size))
	for i := int64(0); i < chunks; i++ {
		if i > 0 && interval > 0 {
			select {
			case <-time.After(time.Duration(interval) * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

func sendBytes(w http.ResponseWriter, r *http.Request, q map[string][]string) {
	n, ok := intParam(w, q, "n", 0, maxBytesN)
	if !ok {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(200)
	if r.Method == "HEAD" {
		return
	}
	block := bytes.Repeat([]byte{'b'}, 64<<10)
	for n > 0 {
		piece := block
		if n < int64(len(piece)) {
			piece = piece[:n]
		}
		m, err := w.Write(piece)
		if err != nil {
			return
		}
		n -= int64(m)
	}
}

func status(w http.ResponseWriter, s string) {
	code, err := strconv.Atoi(s)
	if err != nil || !isNumeric(s) || code < 200 || code > 599 {
		writeError(w, http.StatusBadRequest, "invalid status code (200..599)")
		return
	}
	if code == 204 || code == 304 {
		w.WriteHeader(code)
		return
	}
	writeJSON(w, code, map[string]int{"status": code})
}

// lossyUTF8 converts like Rust's String::from_utf8_lossy, so both services
// echo the same text: each maximal ill-formed subsequence becomes one U+FFFD
// (strings.ToValidUTF8 would merge runs; encoding/json would do one per byte).
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r != utf8.RuneError || size > 1 {
			sb.Write(b[:size])
			b = b[size:]
			continue
		}
		sb.WriteRune(utf8.RuneError)
		b = b[invalidPrefixLen(b):]
	}
	return sb.String()
}

// invalidPrefixLen: length of the maximal prefix of b (which starts with an
// ill-formed sequence) that could begin a well-formed UTF-8 sequence; at least 1.
func invalidPrefixLen(b []byte) int {
	c := b[0]
	need, lo, hi := 0, byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c == 0xED:
		need, hi = 2, 0x9F
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for i := 1; i <= need && i < len(b); i++ {
		if i == 1 && (b[i] < lo || b[i] > hi) || i > 1 && (b[i] < 0x80 || b[i] > 0xBF) {
			break
		}
		n++
	}
	return n
}
