package remote

import (
	"context"

	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/internal/apiconv"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// The server's template store. A template.Template from the server carries
// its name, directory, source, release, machine size, vsock CID and
// clones; not its file list.

// CreateTemplate makes template name from the running or paused sandbox
// from; with stop, the source is ended once the template is taken.
func (c *Client) CreateTemplate(ctx context.Context, name, from string, stop bool) (template.Template, error) {
	res, err := call(ctx, c.tpl.Create, &pb.CreateTemplateRequest{Name: name, From: from, Stop: stop})
	if err != nil {
		return template.Template{}, err
	}
	return apiconv.TemplateFromPB(res.GetTemplate()), nil
}

// Templates lists the server's templates.
func (c *Client) Templates(ctx context.Context) ([]template.Template, error) {
	res, err := call(ctx, c.tpl.List, &pb.Empty{})
	if err != nil {
		return nil, err
	}
	out := make([]template.Template, 0, len(res.GetTemplates()))
	for _, t := range res.GetTemplates() {
		out = append(out, apiconv.TemplateFromPB(t))
	}
	return out, nil
}

// Template describes one template.
func (c *Client) Template(ctx context.Context, name string) (template.Template, error) {
	res, err := call(ctx, c.tpl.Inspect, &pb.NameRequest{Name: name})
	if err != nil {
		return template.Template{}, err
	}
	return apiconv.TemplateFromPB(res.GetTemplate()), nil
}

// RemoveTemplate deletes a template; one with clones only with force.
func (c *Client) RemoveTemplate(ctx context.Context, name string, force bool) error {
	_, err := call(ctx, c.tpl.Remove, &pb.RemoveTemplateRequest{Name: name, Force: force})
	return err
}

// RunTemplate starts a new sandbox cloned from template name.
func (c *Client) RunTemplate(ctx context.Context, name string, o template.CloneOptions) (sandbox.Info, error) {
	res, err := call(ctx, c.tpl.Run, &pb.RunTemplateRequest{Name: name, Id: o.ID, AutoRemove: o.AutoRemove, Verify: o.Verify, Labels: o.Labels})
	if err != nil {
		return sandbox.Info{}, err
	}
	return apiconv.InfoFromPB(res.GetSandbox()), nil
}
