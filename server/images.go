package server

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/api/kindling/v1/kindlingv1connect"
	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/internal/apiconv"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// imageConfig is where the server's image store is and the agent its
// images get (Config.ImageDir, Config.Agent).
type imageConfig struct{ dir, agent string }

// imageService serves the image store (ImageService).
type imageService struct{ s *Server }

var _ kindlingv1connect.ImageServiceHandler = imageService{}

func (i imageService) store() (*image.Store, error) {
	if i.s.images.dir == "" {
		return nil, fmt.Errorf("this server keeps no image store: %w", sandbox.ErrNotSupported)
	}
	return image.Open(i.s.images.dir)
}

// users maps image IDs to their users; what cannot be listed is logged
// and left out, as the CLI does.
func (i imageService) users(ctx context.Context) map[string][]template.ImageUser {
	users, err := template.ImageUsers(ctx, i.s.rt, i.s.tpl)
	if err != nil {
		i.s.log.Warn("list the users of images", "err", err)
	}
	return users
}

func (i imageService) List(ctx context.Context, _ *connect.Request[pb.Empty]) (*connect.Response[pb.ListImagesResponse], error) {
	st, err := i.store()
	if err != nil {
		return reply[pb.ListImagesResponse](nil, err)
	}
	list, err := st.List(ctx)
	if err != nil {
		return reply[pb.ListImagesResponse](nil, err)
	}
	users := i.users(ctx)
	out := &pb.ListImagesResponse{}
	for _, im := range list {
		out.Images = append(out.Images, apiconv.ImageToPB(im, users[im.ID]))
	}
	return reply(out, nil)
}

func (i imageService) Inspect(ctx context.Context, req *connect.Request[pb.NameRequest]) (*connect.Response[pb.ImageResponse], error) {
	st, err := i.store()
	if err != nil {
		return reply[pb.ImageResponse](nil, err)
	}
	if err := needImage(req.Msg.GetName()); err != nil {
		return reply[pb.ImageResponse](nil, err)
	}
	im, err := st.Inspect(ctx, req.Msg.GetName())
	if err != nil {
		return reply[pb.ImageResponse](nil, err)
	}
	return reply(&pb.ImageResponse{Image: apiconv.ImageToPB(im, i.users(ctx)[im.ID])}, nil)
}

func (i imageService) Pull(ctx context.Context, req *connect.Request[pb.PullImageRequest], stream *connect.ServerStream[pb.ImageEvent]) error {
	st, err := i.store()
	if err != nil {
		return apiconv.ToConnect(err)
	}
	if err := needImage(req.Msg.GetRef()); err != nil {
		return apiconv.ToConnect(err)
	}
	o := image.PullOptions{BuildOptions: image.BuildOptions{Agent: i.s.images.agent}}
	send := newImageStream(stream)
	o.Progress = send.event
	im, err := st.Pull(ctx, req.Msg.GetRef(), o)
	return send.finish(ctx, i, im, err)
}

func (i imageService) Import(ctx context.Context, req *connect.Request[pb.ImportImageRequest], stream *connect.ServerStream[pb.ImageEvent]) error {
	st, err := i.store()
	if err != nil {
		return apiconv.ToConnect(err)
	}
	m := req.Msg
	if m.GetPath() == "" {
		return apiconv.ToConnect(fmt.Errorf("no path: give the path of an image archive or layout on the server's host: %w", sandbox.ErrInvalid))
	}
	o := image.ImportOptions{BuildOptions: image.BuildOptions{Agent: i.s.images.agent}, Ref: m.GetRef(), Tags: m.GetTags()}
	send := newImageStream(stream)
	o.Progress = send.event
	im, err := st.Import(ctx, m.GetPath(), o)
	return send.finish(ctx, i, im, err)
}

func (i imageService) Remove(ctx context.Context, req *connect.Request[pb.RemoveImageRequest]) (*connect.Response[pb.RemoveImageResponse], error) {
	st, err := i.store()
	if err != nil {
		return reply[pb.RemoveImageResponse](nil, err)
	}
	if err := needImage(req.Msg.GetName()); err != nil {
		return reply[pb.RemoveImageResponse](nil, err)
	}
	r, err := st.Remove(ctx, req.Msg.GetName(), image.RemoveOptions{
		Force: req.Msg.GetForce(),
		InUse: template.ImageUserNames(ctx, i.s.rt, i.s.tpl),
	})
	if err != nil {
		return reply[pb.RemoveImageResponse](nil, err)
	}
	if r.Warning != "" {
		i.s.log.Warn("image removed while in use", "image", req.Msg.GetName(), "warning", r.Warning)
	}
	return reply(&pb.RemoveImageResponse{Id: r.ID, Untagged: r.Untagged, Deleted: r.Deleted, Warning: r.Warning}, nil)
}

// needImage refuses an empty image name.
func needImage(name string) error {
	if name == "" {
		return fmt.Errorf("no image name: give a name, an ID or a digest: %w", sandbox.ErrInvalid)
	}
	return nil
}

// imageStream sends the progress of a pull or an import, then the image.
type imageStream struct {
	stream *connect.ServerStream[pb.ImageEvent]
	err    error // the first failed send; later events are dropped
}

func newImageStream(stream *connect.ServerStream[pb.ImageEvent]) *imageStream {
	return &imageStream{stream: stream}
}

// event sends e; a client that went away ends the pull or import through
// the request's context.
func (s *imageStream) event(e image.Event) {
	if s.err == nil {
		s.err = s.stream.Send(apiconv.ImageEventToPB(e))
	}
}

// finish ends the stream with the image, or with err.
func (s *imageStream) finish(ctx context.Context, i imageService, im image.Image, err error) error {
	if err != nil {
		return apiconv.ToConnect(err)
	}
	if s.err != nil {
		return apiconv.ToConnect(s.err)
	}
	return apiconv.ToConnect(s.stream.Send(&pb.ImageEvent{Image: apiconv.ImageToPB(im, i.users(ctx)[im.ID])}))
}
