package natsjs

import "errors"

var (
	// ErrInvalidMessage is returned, wrapped, when a message cannot be
	// carried as a NATS message: its ID is empty, or a metadata key is not a
	// valid or is a reserved header name, or a header value would not
	// survive the trip unchanged (see the package documentation on
	// headers). Retrying does not help, so the publisher marks these errors
	// permanent (a *backoff.PermanentError, which retry.IsPermanent
	// recognises) and the relay dead-letters the message at once. Check it
	// with errors.Is.
	ErrInvalidMessage = errors.New("natsjs: message cannot be sent as NATS headers")

	// ErrNotConnected is returned, wrapped, by publishes attempted while
	// the NATS connection is not connected (reconnecting or closed). The
	// publisher fails fast instead of buffering the message, so a relay can
	// retry it later. Check it with errors.Is.
	ErrNotConnected = errors.New("natsjs: not connected to the NATS server")

	// ErrNoStream is returned, wrapped, by Subscribe when no stream
	// captures the topic. Streams are never created implicitly; see
	// [EnsureStream]. Check it with errors.Is.
	ErrNoStream = errors.New("natsjs: no JetStream stream captures the topic")

	// ErrAckTimeout is returned, wrapped, for a message of
	// [Publisher.PublishBatch] whose PubAck did not arrive within
	// [PublisherConfig.AckTimeout]. The server may still have stored it; a
	// retry with the same ID within the stream's duplicate window is
	// dropped by the server. Check it with errors.Is.
	ErrAckTimeout = errors.New("natsjs: timed out waiting for the PubAck")
)
