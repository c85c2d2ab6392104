// Package jetstream plugs tandem into NATS JetStream, a durable log many tandem processes
// share: a Source feeds a runtime from a durable pull consumer, a Publisher is a Go handler
// that publishes the events routed to it to a stream, and a DeadLetterSink stores dead
// letters in a stream that `tandem dlq` reads and replays.
//
// # Delivery
//
// A Source's messages are events in CloudEvents' NATS binding, binary or structured mode
// (package cloudevents). Each one is submitted with SubmitFrom, those that arrived together
// in one tandem.Runtime.Batch, so the route's handler, policies, timeout and dead letters
// apply as to any event, and the
// outcome maps onto JetStream's acknowledgement once it is final:
//
//	outcome                                   JetStream
//	acknowledged                              Ack
//	retryable, and the judgement allows it    NakWithDelay(the delay)   (counted in Stats.HandedBack)
//	dead-lettered (Term, attempts, budget…)   TermWithReason(reason)    (the dead letter is in the runtime's sink)
//	cut short by Shutdown (cancelled)         Nak                       (another process takes it)
//	still running at half the AckWait         InProgress, again at each half
//
// The delivery number is the message's NumDelivered, and the consumer's MaxDeliver the
// last attempt: the failure of that delivery is dead-lettered here, never handed back to a
// consumer that would not deliver it again. A Source has at most MaxInFlight messages taken
// and not settled, and half as many again in its buffer, so a consumer's MaxAckPending
// shared by N processes bounds what each holds. The guarantee is JetStream's: at least once. Give events an idempotency key
// (or rely on the event ID) and an idempotency policy to record each effect once.
package jetstream
