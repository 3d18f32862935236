package async

import "context"

// groupKey is the context key of [WithGroup].
type groupKey struct{}

// WithGroup returns a copy of ctx that carries the consumer group of the
// subscription a handler runs for. Subscribers of this module (the memory
// broker, natsjs) give their handlers such a context, so that middleware
// can check that it is wired for the group it runs in: txm.InboxHandler
// refuses a message whose subscription's group differs from its inbox's.
//
// A group of "" stands for a private subscription (no group): it hides a
// group an outer context carried, and [GroupFromContext] reports no group.
// A subscriber of another module should call WithGroup once per
// subscription, not per message.
func WithGroup(ctx context.Context, group string) context.Context {
	return context.WithValue(ctx, groupKey{}, group)
}

// GroupFromContext returns the consumer group [WithGroup] put into ctx. Its
// second result is false when ctx carries no group: the handler was not
// called by a subscriber that reports its group, or its subscription is
// private ([SubscriberConfig.GroupName] "").
func GroupFromContext(ctx context.Context) (string, bool) {
	g, _ := ctx.Value(groupKey{}).(string)
	return g, g != ""
}
