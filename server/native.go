package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/api/kindling/v1/kindlingv1connect"
	"github.com/kindling-vm/kindling/internal/apiconv"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// native serves kindling's own API: the Connect services of
// api/kindling/v1, each RPC one call of the runtime or the template store.
type native struct{ s *Server }

var (
	_ kindlingv1connect.SandboxServiceHandler  = native{}
	_ kindlingv1connect.TemplateServiceHandler = templates{}
)

// reply wraps a result, turning an error into its Connect code.
func reply[T any](msg *T, err error) (*connect.Response[T], error) {
	if err != nil {
		return nil, apiconv.ToConnect(err)
	}
	return connect.NewResponse(msg), nil
}

// needID checks a request's sandbox ID is there, before anything is done.
func needID(id string) error {
	if id == "" {
		return fmt.Errorf("no sandbox id given: %w", sandbox.ErrInvalid)
	}
	return nil
}

// info describes sandbox in with its lease's end.
func (n native) info(in sandbox.Info) *pb.SandboxResponse {
	l, _ := n.s.leases.get(in.ID)
	return &pb.SandboxResponse{Sandbox: apiconv.InfoToPB(in, l.EndAt)}
}

func (n native) Create(ctx context.Context, req *connect.Request[pb.CreateRequest]) (*connect.Response[pb.SandboxResponse], error) {
	if req.Msg.GetSpec() == nil {
		return reply[pb.SandboxResponse](nil, fmt.Errorf("no spec given: %w", sandbox.ErrInvalid))
	}
	spec := apiconv.SpecFromPB(req.Msg.GetSpec())
	if err := checkNamedExecutables(spec.Firecracker, spec.Jailer, spec.CNIBinDirs); err != nil {
		return reply[pb.SandboxResponse](nil, err)
	}
	in, err := n.s.rt.Create(ctx, spec, sandbox.CreateOptions{AutoRemove: req.Msg.GetAutoRemove()})
	if err != nil {
		return reply[pb.SandboxResponse](nil, err)
	}
	return reply(n.info(in), nil)
}

func (n native) Start(ctx context.Context, req *connect.Request[pb.IDRequest]) (*connect.Response[pb.SandboxResponse], error) {
	if err := needID(req.Msg.GetId()); err != nil {
		return reply[pb.SandboxResponse](nil, err)
	}
	in, err := n.s.rt.Start(ctx, req.Msg.GetId())
	if err != nil {
		return reply[pb.SandboxResponse](nil, err)
	}
	return reply(n.info(in), nil)
}

func (n native) Stop(ctx context.Context, req *connect.Request[pb.StopRequest]) (*connect.Response[pb.Empty], error) {
	if err := needID(req.Msg.GetId()); err != nil {
		return reply[pb.Empty](nil, err)
	}
	var opts []sandbox.StopOption
	if req.Msg.GraceMs != nil {
		if req.Msg.GetGraceMs() < 0 {
			return reply[pb.Empty](nil, fmt.Errorf("grace_ms %d: must not be negative: %w", req.Msg.GetGraceMs(), sandbox.ErrInvalid))
		}
		opts = append(opts, sandbox.StopGrace(time.Duration(req.Msg.GetGraceMs())*time.Millisecond))
	}
	return reply(&pb.Empty{}, n.s.rt.Stop(ctx, req.Msg.GetId(), opts...))
}

func (n native) Kill(ctx context.Context, req *connect.Request[pb.IDRequest]) (*connect.Response[pb.Empty], error) {
	if err := needID(req.Msg.GetId()); err != nil {
		return reply[pb.Empty](nil, err)
	}
	return reply(&pb.Empty{}, n.s.rt.Kill(ctx, req.Msg.GetId()))
}

func (n native) Remove(ctx context.Context, req *connect.Request[pb.RemoveRequest]) (*connect.Response[pb.Empty], error) {
	if err := needID(req.Msg.GetId()); err != nil {
		return reply[pb.Empty](nil, err)
	}
	if err := n.s.remove(ctx, req.Msg.GetId(), req.Msg.GetForce()); err != nil {
		return reply[pb.Empty](nil, err)
	}
	return reply(&pb.Empty{}, nil)
}

func (n native) Inspect(ctx context.Context, req *connect.Request[pb.IDRequest]) (*connect.Response[pb.SandboxResponse], error) {
	if err := needID(req.Msg.GetId()); err != nil {
		return reply[pb.SandboxResponse](nil, err)
	}
	in, err := n.s.rt.Inspect(ctx, req.Msg.GetId())
	if err != nil {
		return reply[pb.SandboxResponse](nil, err)
	}
	return reply(n.info(in), nil)
}

func (n native) List(ctx context.Context, req *connect.Request[pb.ListRequest]) (*connect.Response[pb.ListResponse], error) {
	for k, v := range req.Msg.GetLabels() {
		if err := sandbox.ValidateLabel(k, v); err != nil {
			return reply[pb.ListResponse](nil, err)
		}
	}
	c, err := n.s.lister.join(ctx)
	if err == nil {
		err = c.err
	}
	if err != nil {
		return reply[pb.ListResponse](nil, err)
	}
	// The descriptions are shared by the requests that joined c: only
	// read (marshalled) from here on.
	all := c.nativeSandboxes(n)
	labels := req.Msg.GetLabels()
	if len(labels) == 0 {
		return reply(&pb.ListResponse{Sandboxes: all}, nil)
	}
	out := &pb.ListResponse{Sandboxes: make([]*pb.Sandbox, 0, len(all))}
	for i, in := range c.infos {
		if hasLabels(in, labels) {
			out.Sandboxes = append(out.Sandboxes, all[i])
		}
	}
	return reply(out, nil)
}

func (n native) Wait(ctx context.Context, req *connect.Request[pb.IDRequest]) (*connect.Response[pb.WaitResponse], error) {
	if err := needID(req.Msg.GetId()); err != nil {
		return reply[pb.WaitResponse](nil, err)
	}
	exit, err := n.s.rt.Wait(ctx, req.Msg.GetId())
	if err != nil {
		return reply[pb.WaitResponse](nil, err)
	}
	return reply(&pb.WaitResponse{Exit: apiconv.ExitToPB(exit)}, nil)
}

func (n native) Pause(ctx context.Context, req *connect.Request[pb.IDRequest]) (*connect.Response[pb.Empty], error) {
	if err := needID(req.Msg.GetId()); err != nil {
		return reply[pb.Empty](nil, err)
	}
	return reply(&pb.Empty{}, n.s.rt.Pause(ctx, req.Msg.GetId()))
}

func (n native) Resume(ctx context.Context, req *connect.Request[pb.IDRequest]) (*connect.Response[pb.Empty], error) {
	if err := needID(req.Msg.GetId()); err != nil {
		return reply[pb.Empty](nil, err)
	}
	return reply(&pb.Empty{}, n.s.rt.Resume(ctx, req.Msg.GetId()))
}

func (n native) Snapshot(ctx context.Context, req *connect.Request[pb.SnapshotRequest]) (*connect.Response[pb.SnapshotResponse], error) {
	if err := needID(req.Msg.GetId()); err != nil {
		return reply[pb.SnapshotResponse](nil, err)
	}
	if req.Msg.GetDir() == "" {
		return reply[pb.SnapshotResponse](nil, fmt.Errorf("no snapshot directory given: %w", sandbox.ErrInvalid))
	}
	si, err := n.s.rt.Snapshot(ctx, req.Msg.GetId(), req.Msg.GetDir(), sandbox.SnapshotOptions{Own: req.Msg.GetOwn(), LeavePaused: req.Msg.GetLeavePaused()})
	if err != nil {
		return reply[pb.SnapshotResponse](nil, err)
	}
	return reply(apiconv.SnapshotToPB(si), nil)
}

func (n native) Restore(ctx context.Context, req *connect.Request[pb.RestoreRequest]) (*connect.Response[pb.SandboxResponse], error) {
	m := req.Msg
	if m.GetDir() == "" {
		return reply[pb.SandboxResponse](nil, fmt.Errorf("no snapshot directory given: %w", sandbox.ErrInvalid))
	}
	o := sandbox.RestoreOptions{ID: m.GetId(), AutoRemove: m.GetAutoRemove(), Firecracker: m.GetFirecracker(),
		CopyOwnedDrives: m.GetCopyOwnedDrives(), Labels: m.GetLabels(),
		Jailer: m.GetJailer(), NoJailer: m.GetNoJailer()}
	if err := checkNamedExecutables(o.Firecracker, o.Jailer, nil); err != nil {
		return reply[pb.SandboxResponse](nil, err)
	}
	if len(m.GetNet()) > 0 {
		o.Net = apiconv.NetsFromPB(m.GetNet())
	}
	if m.GetPorts() != nil {
		o.Ports = append([]string{}, m.GetPorts().GetPorts()...)
	}
	in, err := n.s.rt.Restore(ctx, m.GetDir(), o)
	if err != nil {
		return reply[pb.SandboxResponse](nil, err)
	}
	return reply(n.info(in), nil)
}

// logChunk is the most a LogChunk carries.
const logChunk = 32 << 10

func streamLog(ctx context.Context, open func(context.Context, string, sandbox.LogOptions) (io.ReadCloser, error), req *pb.LogRequest, stream *connect.ServerStream[pb.LogChunk]) error {
	if err := needID(req.GetId()); err != nil {
		return apiconv.ToConnect(err)
	}
	rc, err := open(ctx, req.GetId(), sandbox.LogOptions{Follow: req.GetFollow()})
	if err != nil {
		return apiconv.ToConnect(err)
	}
	defer rc.Close()
	buf := make([]byte, logChunk)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if serr := stream.Send(&pb.LogChunk{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return apiconv.ToConnect(err)
		}
	}
}

func (n native) Console(ctx context.Context, req *connect.Request[pb.LogRequest], stream *connect.ServerStream[pb.LogChunk]) error {
	return streamLog(ctx, n.s.rt.Console, req.Msg, stream)
}

func (n native) Logs(ctx context.Context, req *connect.Request[pb.LogRequest], stream *connect.ServerStream[pb.LogChunk]) error {
	return streamLog(ctx, n.s.rt.Logs, req.Msg, stream)
}

func (n native) AttachDrive(ctx context.Context, req *connect.Request[pb.AttachDriveRequest]) (*connect.Response[pb.AttachDriveResponse], error) {
	if err := needID(req.Msg.GetId()); err != nil {
		return reply[pb.AttachDriveResponse](nil, err)
	}
	if req.Msg.GetDisk().GetPath() == "" {
		return reply[pb.AttachDriveResponse](nil, fmt.Errorf("no drive path given: %w", sandbox.ErrInvalid))
	}
	slot, err := n.s.rt.AttachDrive(ctx, req.Msg.GetId(), sandbox.Disk{Path: req.Msg.GetDisk().GetPath(), ReadOnly: req.Msg.GetDisk().GetReadOnly()})
	if err != nil {
		return reply[pb.AttachDriveResponse](nil, err)
	}
	return reply(&pb.AttachDriveResponse{Slot: slot}, nil)
}

func (n native) DetachDrive(ctx context.Context, req *connect.Request[pb.DetachDriveRequest]) (*connect.Response[pb.Empty], error) {
	if err := needID(req.Msg.GetId()); err != nil {
		return reply[pb.Empty](nil, err)
	}
	return reply(&pb.Empty{}, n.s.rt.DetachDrive(ctx, req.Msg.GetId(), req.Msg.GetSlot()))
}

// maxTimeout is the longest lifetime a lease can be given.
const maxTimeout = 30 * 24 * time.Hour

func (n native) SetTimeout(ctx context.Context, req *connect.Request[pb.SetTimeoutRequest]) (*connect.Response[pb.Empty], error) {
	m := req.Msg
	if err := needID(m.GetId()); err != nil {
		return reply[pb.Empty](nil, err)
	}
	d := time.Duration(m.GetTimeoutMs()) * time.Millisecond
	if m.GetTimeoutMs() < 0 || d > maxTimeout {
		return reply[pb.Empty](nil, fmt.Errorf("timeout_ms %d: give 0 (no lifetime) up to %d: %w", m.GetTimeoutMs(), maxTimeout.Milliseconds(), sandbox.ErrInvalid))
	}
	action := onTimeoutKill
	if m.GetPause() {
		action = onTimeoutPause
	}
	return reply(&pb.Empty{}, n.s.setTimeout(ctx, m.GetId(), d, action))
}

// templates serves the template store.
type templates struct{ s *Server }

func (t templates) store() (*template.Store, error) {
	if t.s.tpl == nil {
		return nil, fmt.Errorf("templates: %w", sandbox.ErrNotSupported)
	}
	return t.s.tpl, nil
}

func (t templates) Create(ctx context.Context, req *connect.Request[pb.CreateTemplateRequest]) (*connect.Response[pb.TemplateResponse], error) {
	ts, err := t.store()
	if err != nil {
		return reply[pb.TemplateResponse](nil, err)
	}
	if req.Msg.GetName() == "" || req.Msg.GetFrom() == "" {
		return reply[pb.TemplateResponse](nil, fmt.Errorf("give a template name and the sandbox it is made from: %w", sandbox.ErrInvalid))
	}
	tpl, err := ts.Create(ctx, req.Msg.GetName(), req.Msg.GetFrom(), template.Options{Stop: req.Msg.GetStop()})
	if err != nil {
		return reply[pb.TemplateResponse](nil, err)
	}
	return reply(&pb.TemplateResponse{Template: apiconv.TemplateToPB(tpl)}, nil)
}

func (t templates) List(ctx context.Context, _ *connect.Request[pb.Empty]) (*connect.Response[pb.ListTemplatesResponse], error) {
	ts, err := t.store()
	if err != nil {
		return reply[pb.ListTemplatesResponse](nil, err)
	}
	list, err := ts.List(ctx)
	if err != nil {
		return reply[pb.ListTemplatesResponse](nil, err)
	}
	out := &pb.ListTemplatesResponse{}
	for _, tpl := range list {
		out.Templates = append(out.Templates, apiconv.TemplateToPB(tpl))
	}
	return reply(out, nil)
}

func (t templates) Inspect(ctx context.Context, req *connect.Request[pb.NameRequest]) (*connect.Response[pb.TemplateResponse], error) {
	ts, err := t.store()
	if err != nil {
		return reply[pb.TemplateResponse](nil, err)
	}
	tpl, err := ts.Inspect(ctx, req.Msg.GetName())
	if err != nil {
		return reply[pb.TemplateResponse](nil, err)
	}
	return reply(&pb.TemplateResponse{Template: apiconv.TemplateToPB(tpl)}, nil)
}

func (t templates) Remove(ctx context.Context, req *connect.Request[pb.RemoveTemplateRequest]) (*connect.Response[pb.Empty], error) {
	ts, err := t.store()
	if err != nil {
		return reply[pb.Empty](nil, err)
	}
	return reply(&pb.Empty{}, ts.Remove(ctx, req.Msg.GetName(), req.Msg.GetForce()))
}

func (t templates) Run(ctx context.Context, req *connect.Request[pb.RunTemplateRequest]) (*connect.Response[pb.SandboxResponse], error) {
	ts, err := t.store()
	if err != nil {
		return reply[pb.SandboxResponse](nil, err)
	}
	m := req.Msg
	// A plain run (no ID, labels or options of its own) is served from the
	// template's warm pool when it has a clone ready.
	if m.GetId() == "" && len(m.GetLabels()) == 0 && !m.GetAutoRemove() && !m.GetVerify() {
		if in, ok, err := t.s.pools.claim(ctx, m.GetName(), nil); ok && err == nil {
			return reply(native(t).info(in), nil)
		}
	}
	in, err := ts.Run(ctx, m.GetName(), template.CloneOptions{ID: m.GetId(), AutoRemove: m.GetAutoRemove(), Verify: m.GetVerify(), Labels: m.GetLabels()})
	if err != nil {
		return reply[pb.SandboxResponse](nil, err)
	}
	return reply(native(t).info(in), nil)
}

// needTemplate checks a request's template name is there.
func needTemplate(name string) error {
	if name == "" {
		return fmt.Errorf("no template name given: %w", sandbox.ErrInvalid)
	}
	return nil
}
