package remote

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/internal/apiconv"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// Image is an image of the server's store with its users: the sandboxes
// started from it and the templates built from it.
type Image struct {
	image.Image
	Users []template.ImageUser `json:"users"`
}

func imageFromPB(p *pb.Image) Image {
	im, users := apiconv.ImageFromPB(p)
	return Image{Image: im, Users: users}
}

// ListImages describes the images of the server's store.
func (c *Client) ListImages(ctx context.Context) ([]Image, error) {
	res, err := call(ctx, c.img.List, &pb.Empty{})
	if err != nil {
		return nil, err
	}
	out := make([]Image, 0, len(res.GetImages()))
	for _, p := range res.GetImages() {
		out = append(out, imageFromPB(p))
	}
	return out, nil
}

// InspectImage describes the image name designates (a name, an ID, a
// unique ID prefix or a manifest digest).
func (c *Client) InspectImage(ctx context.Context, name string) (Image, error) {
	res, err := call(ctx, c.img.Inspect, &pb.NameRequest{Name: name})
	if err != nil {
		return Image{}, err
	}
	return imageFromPB(res.GetImage()), nil
}

// PullImage has the server pull ref from a registry, with the server's
// credentials, and build it with the server's agent; progress, if set,
// gets each step.
func (c *Client) PullImage(ctx context.Context, ref string, progress func(image.Event)) (Image, error) {
	stream, err := c.img.Pull(ctx, connect.NewRequest(&pb.PullImageRequest{Ref: ref}))
	if err != nil {
		return Image{}, apiconv.FromConnect(err)
	}
	return receiveImage(stream, progress)
}

// ImportImage has the server import the archive or layout at path on the
// server's host (ref picks one image of several; tags are more names).
func (c *Client) ImportImage(ctx context.Context, path, ref string, tags []string, progress func(image.Event)) (Image, error) {
	stream, err := c.img.Import(ctx, connect.NewRequest(&pb.ImportImageRequest{Path: path, Ref: ref, Tags: tags}))
	if err != nil {
		return Image{}, apiconv.FromConnect(err)
	}
	return receiveImage(stream, progress)
}

// receiveImage passes a pull's or an import's events to progress and
// returns the image its last message carries.
func receiveImage(stream *connect.ServerStreamForClient[pb.ImageEvent], progress func(image.Event)) (Image, error) {
	defer stream.Close()
	for stream.Receive() {
		m := stream.Msg()
		if m.GetImage() != nil {
			return imageFromPB(m.GetImage()), nil
		}
		if progress != nil {
			progress(apiconv.ImageEventFromPB(m))
		}
	}
	if err := stream.Err(); err != nil {
		return Image{}, apiconv.FromConnect(err)
	}
	return Image{}, fmt.Errorf("the server ended the image stream without the image: %w", sandbox.ErrUnavailable)
}

// RemoveImage removes the image name designates, or only that name when
// the image has several; one in use only with force (Removed.Warning then
// names its users).
func (c *Client) RemoveImage(ctx context.Context, name string, force bool) (image.Removed, error) {
	res, err := call(ctx, c.img.Remove, &pb.RemoveImageRequest{Name: name, Force: force})
	if err != nil {
		return image.Removed{}, err
	}
	return image.Removed{ID: res.GetId(), Untagged: res.GetUntagged(), Deleted: res.GetDeleted(), Warning: res.GetWarning()}, nil
}
