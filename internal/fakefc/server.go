package fakefc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// maxConnections is how many API connections Firecracker serves at once;
// a request on a further connection is answered 503 and the connection
// closed, as the real one does.
const maxConnections = 10

// phase says when an endpoint may be called.
type phase int

const (
	anyTime  phase = iota
	preBoot        // refused after InstanceStart or a snapshot load
	postBoot       // refused before InstanceStart or a snapshot load
)

// Fault messages shared with the real Firecracker's wording.
const (
	msgAfterStart  = "The requested operation is not supported after starting the microVM."
	msgBeforeStart = "The requested operation is not supported before starting the microVM."
	msgDeserialize = "An error occurred when deserializing the json body of a request: "
	msgIDMismatch  = "The id from the path does not match the id from the body!"
)

// apiError is an error answer: a status and Firecracker's fault_message.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// badRequest returns a 400 answer with a formatted fault message.
func badRequest(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// request is one API call as handlers see it.
type request struct {
	method string
	path   string
	id     string // the {id} of /drives/{id}, /network-interfaces/{id}, /pmem/{id}
	body   []byte
}

// reply is a successful answer: 204 when body is nil, else 200 with JSON.
type reply struct {
	body any
	// after runs once the answer has been written (used to exit after
	// answering, as a guest power-off or a failed load does).
	after func()
}

// route is one endpoint of the API.
type route struct {
	method string
	path   string // "/drives/*" matches one path segment
	since  Version
	until  Version
	phase  phase
	// body, when set, is the schema the request body must match; it is
	// checked before the phase, as Firecracker parses before it acts.
	body    *schema
	partial bool // body is a PATCH: no field is required
	handle  func(*server, *request) (reply, error)
}

// routes is the API of every emulated release.
var routes = []route{
	{method: "GET", path: "/", handle: (*server).getInstance},
	{method: "GET", path: "/version", since: v1_0, handle: (*server).getVersion},
	{method: "GET", path: "/machine-config", handle: (*server).getMachineConfig},
	{method: "PUT", path: "/machine-config", body: machineConfigSchema, phase: preBoot, handle: (*server).putMachineConfig},
	{method: "PATCH", path: "/machine-config", body: machineConfigSchema, partial: true, phase: preBoot, handle: (*server).patchMachineConfig},
	{method: "GET", path: "/vm/config", since: v0_25, handle: (*server).getVMConfig},
	{method: "PUT", path: "/boot-source", body: bootSourceSchema, phase: preBoot, handle: (*server).putBootSource},
	{method: "PUT", path: "/drives/*", body: driveSchema, phase: preBoot, handle: (*server).putDrive},
	{method: "PATCH", path: "/drives/*", body: partialDriveSchema, phase: postBoot, handle: (*server).patchDrive},
	{method: "PUT", path: "/network-interfaces/*", body: netSchema, phase: preBoot, handle: (*server).putNet},
	{method: "PATCH", path: "/network-interfaces/*", body: partialNetSchema, phase: postBoot, handle: (*server).patchNet},
	{method: "PUT", path: "/vsock", body: vsockSchema, phase: preBoot, handle: (*server).putVsock},
	{method: "PUT", path: "/logger", body: loggerSchema, phase: preBoot, handle: (*server).putLogger},
	{method: "PUT", path: "/metrics", body: metricsSchema, phase: preBoot, handle: (*server).putMetrics},
	{method: "GET", path: "/mmds", handle: (*server).getMMDS},
	{method: "PUT", path: "/mmds", handle: (*server).putMMDS},
	{method: "PATCH", path: "/mmds", handle: (*server).patchMMDS},
	{method: "PUT", path: "/mmds/config", body: mmdsConfigSchema, phase: preBoot, handle: (*server).putMMDSConfig},
	{method: "GET", path: "/balloon", handle: (*server).getBalloon},
	{method: "PUT", path: "/balloon", body: balloonSchema, phase: preBoot, handle: (*server).putBalloon},
	{method: "PATCH", path: "/balloon", body: balloonUpdateSchema, phase: postBoot, handle: (*server).patchBalloon},
	{method: "GET", path: "/balloon/statistics", phase: postBoot, handle: (*server).getBalloonStats},
	{method: "PATCH", path: "/balloon/statistics", body: balloonStatsUpdateSchema, phase: postBoot, handle: (*server).patchBalloonStats},
	{method: "GET", path: "/balloon/hinting/status", since: v1_14, phase: postBoot, handle: (*server).getHinting},
	{method: "PATCH", path: "/balloon/hinting/start", since: v1_14, phase: postBoot, handle: (*server).startHinting},
	{method: "PATCH", path: "/balloon/hinting/stop", since: v1_14, phase: postBoot, handle: (*server).stopHinting},
	{method: "PUT", path: "/entropy", body: entropySchema, since: v1_4, phase: preBoot, handle: (*server).putEntropy},
	{method: "PUT", path: "/cpu-config", body: cpuConfigSchema, since: v1_4, phase: preBoot, handle: (*server).putCPUConfig},
	{method: "PUT", path: "/serial", body: serialSchema, since: v1_14, phase: preBoot, handle: (*server).putSerial},
	{method: "PUT", path: "/hotplug/memory", body: hotplugSchema, since: v1_14, phase: preBoot, handle: (*server).putHotplug},
	{method: "GET", path: "/hotplug/memory", since: v1_14, phase: postBoot, handle: (*server).getHotplug},
	{method: "PATCH", path: "/hotplug/memory", body: hotplugUpdateSchema, since: v1_14, phase: postBoot, handle: (*server).patchHotplug},
	{method: "PUT", path: "/pmem/*", body: pmemSchema, since: v1_14, phase: preBoot, handle: (*server).putPmem},
	{method: "PATCH", path: "/pmem/*", body: partialPmemSchema, since: v1_16, phase: postBoot, handle: (*server).patchPmem},
	{method: "PUT", path: "/actions", handle: (*server).putAction},
	{method: "PATCH", path: "/vm", body: vmStateSchema, phase: postBoot, handle: (*server).patchVM},
	{method: "PUT", path: "/snapshot/create", body: snapshotCreateSchema, phase: postBoot, handle: (*server).createSnapshot},
	{method: "PUT", path: "/snapshot/load", body: snapshotLoadSchema, phase: preBoot, handle: (*server).loadSnapshot},
}

// server is the fake's API server and the VM behind it.
type server struct {
	settings Settings
	flags    Flags
	log      *logger
	stderr   io.Writer
	vm       *vm
	exit     func(code int) // os.Exit, after logging

	sigtermOnce sync.Once // SIGTERM handled once a simulated guest boots

	mu       sync.Mutex // guards requests and faults
	requests int        // API requests received so far
	faults   []Fault    // remaining injected faults (Count 0: forever)
}

func newServer(s Settings, f Flags, log *logger, stdout, stderr io.Writer) *server {
	fc := &server{settings: s, flags: f, log: log, stderr: stderr, faults: append([]Fault(nil), s.Fail...)}
	fc.exit = func(code int) {
		if code == ExitOK {
			log.info("main", "Firecracker exiting successfully. exit_code=%d", code)
		} else {
			log.errorf("main", "Firecracker exiting with error. exit_code=%d", code)
		}
		os.Exit(code)
	}
	fc.vm = newVM(s.Version, f.ID, stdout, log, f.MMDSSizeLimit)
	return fc
}

// serve answers API requests on ln until it fails.
func (fc *server) serve(ln net.Listener) error {
	// Connection-level errors go nowhere: stderr is for the VMM's own
	// messages, which kindling shows to people.
	srv := &http.Server{Handler: fc, ErrorLog: log.New(io.Discard, "", 0)}
	return srv.Serve(&limitListener{Listener: ln, max: maxConnections})
}

// ServeHTTP answers one API request.
func (fc *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", "Firecracker API")
	fc.mu.Lock()
	fc.requests++
	n := fc.requests
	fc.mu.Unlock()
	if fc.settings.ExitAt > 0 && n >= fc.settings.ExitAt {
		fc.log.errorf("fc_api", "Exiting on API request %d, as FAKEFC asks.", n)
		fc.exit(ExitError)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(fc.flags.MaxPayload)+1))
	if err != nil {
		fc.writeError(w, badRequest("read request body: %v", err))
		return
	}
	method := titleCase(r.Method)
	if len(body) > 0 && r.URL.Path != "/mmds" && r.URL.Path != "/cpu-config" {
		fc.log.info("fc_api", "The API server received a %s request on %q with body %q.", method, r.URL.Path, body)
	} else {
		fc.log.info("fc_api", "The API server received a %s request on %q.", method, r.URL.Path)
	}
	if fc.settings.Delay > 0 {
		time.Sleep(fc.settings.Delay)
	}
	if len(body) > fc.flags.MaxPayload {
		fc.writeError(w, badRequest("Request payload with size %d is larger than the limit of %d allowed by server.", max(r.ContentLength, int64(len(body))), fc.flags.MaxPayload))
		return
	}
	if f, ok := fc.takeFault(r.Method, r.URL.Path); ok {
		fc.writeError(w, &apiError{status: f.Status, msg: f.Message})
		return
	}
	switch r.Method {
	case "GET", "PUT", "PATCH":
	default:
		// The real server answers unknown methods outside its JSON
		// error format.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "{ \"error\": \"Invalid HTTP Method: Unsupported HTTP method.\nAll previous unanswered requests will be dropped.\" }")
		return
	}
	rt, id, ok := fc.match(r.Method, r.URL.Path)
	if !ok {
		fc.writeError(w, badRequest("Invalid request method and/or path: %s %s.", r.Method, strings.TrimPrefix(r.URL.Path, "/")))
		return
	}
	if len(bytes.TrimSpace(body)) == 0 && (r.Method == "PUT" || r.Method == "PATCH") && !strings.HasPrefix(r.URL.Path, "/balloon/hinting/") {
		fc.writeError(w, badRequest("Empty %s request.", r.Method))
		return
	}
	if rt.body != nil {
		if _, err := decodeBody(body, rt.body, fc.settings.Version, rt.partial); err != nil {
			fc.writeError(w, err)
			return
		}
	}
	started := fc.vm.started()
	switch {
	case rt.phase == preBoot && started:
		fc.writeError(w, badRequest(msgAfterStart))
		return
	case rt.phase == postBoot && !started:
		fc.writeError(w, badRequest(msgBeforeStart))
		return
	}
	rep, err := rt.handle(fc, &request{method: r.Method, path: r.URL.Path, id: id, body: body})
	if err != nil {
		fc.writeError(w, err)
		if rep.after != nil {
			flush(w)
			go rep.after()
		}
		return
	}
	if rep.body == nil {
		w.WriteHeader(http.StatusNoContent)
	} else {
		b, err := json.Marshal(rep.body)
		if err != nil {
			fc.writeError(w, &apiError{status: http.StatusInternalServerError, msg: err.Error()})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
	}
	if rep.body == nil {
		fc.log.info("fc_api", "The request was executed successfully. Status code: 204 No Content.")
	} else {
		fc.log.info("fc_api", "The request was executed successfully. Status code: 200 OK.")
	}
	if rep.after != nil {
		flush(w)
		go rep.after()
	}
}

// flush sends what was written of the answer.
func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

// match finds the route of method and path in the emulated release.
func (fc *server) match(method, path string) (route, string, bool) {
	v := fc.settings.Version
	for _, rt := range routes {
		if rt.method != method || !v.within(rt.since, rt.until) {
			continue
		}
		if prefix, ok := strings.CutSuffix(rt.path, "*"); ok {
			id, found := strings.CutPrefix(path, prefix)
			if found && id != "" && !strings.Contains(id, "/") {
				return rt, id, true
			}
			continue
		}
		if rt.path == path {
			return rt, "", true
		}
	}
	return route{}, "", false
}

// takeFault returns the injected fault for method and path, if any, and
// uses one of its count.
func (fc *server) takeFault(method, path string) (Fault, bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for i, f := range fc.faults {
		if !strings.EqualFold(f.Method, method) || f.Path != path {
			continue
		}
		if f.Count > 0 {
			fc.faults[i].Count--
			if fc.faults[i].Count == 0 {
				fc.faults = append(fc.faults[:i], fc.faults[i+1:]...)
			}
		}
		return f, true
	}
	return Fault{}, false
}

// writeError answers err as {"fault_message": ...}.
func (fc *server) writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	var de *decodeError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &de):
		ae = badRequest("%s%s.", msgDeserialize, de.Error())
	default:
		ae = badRequest("%v", err)
	}
	b, _ := json.Marshal(map[string]string{"fault_message": ae.msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ae.status)
	_, _ = w.Write(b)
	fc.log.errorf("fc_api", "Received Error. Status code: %d %s. Message: %s", ae.status, http.StatusText(ae.status), ae.msg)
}

// titleCase turns "PUT" into "Put", as Firecracker logs methods.
func titleCase(m string) string {
	if m == "" {
		return m
	}
	return m[:1] + strings.ToLower(m[1:])
}

// limitListener accepts at most max open connections; a connection beyond
// that is closed at once, as Firecracker's API server does.
type limitListener struct {
	net.Listener
	max int

	mu   sync.Mutex // guards open
	open int
}

// Accept returns the next connection within the limit.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.open >= l.max {
			l.mu.Unlock()
			go refuseBusy(c)
			continue
		}
		l.open++
		l.mu.Unlock()
		return &limitConn{Conn: c, l: l}, nil
	}
}

// refuseBusy answers the first request on c with 503, as Firecracker does
// on a connection over its limit, and closes c.
func refuseBusy(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	req.Body.Close()
	body := `{"fault_message":"Too many open connections"}`
	fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nServer: Firecracker API\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// limitConn gives its slot back when closed.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

// Close closes the connection and frees its slot.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
	})
	return err
}
