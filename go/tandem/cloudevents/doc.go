// Package cloudevents speaks CloudEvents 1.0 at tandem's edges: it converts between a
// tandem Event and a CloudEvents event (the SDK's event.Event), reads and writes the HTTP
// binding in binary, structured and batch content modes, maps events onto message headers
// in binary or structured mode (the NATS binding), and serves an HTTP ingress that submits
// or calls the events it receives.
//
// # The mapping
//
// Every CloudEvents context attribute has a field of its own (id, source, type,
// specversion, time, subject, datacontenttype, dataschema), and so do the extensions
// tandem knows:
//
//	Event field      CloudEvents extension   type
//	CorrelationID    correlationid           String
//	CausationID      causationid             String
//	TraceParent      traceparent             String (distributed tracing extension)
//	TraceState       tracestate              String (distributed tracing extension)
//	IdempotencyKey   idempotencykey          String
//	PartitionKey     partitionkey            String (partitioning extension)
//	Attempt          tandemattempt           Integer
//	Deadline         tandemdeadline          Timestamp
//
// Every other extension goes into Event.Extensions under its own name, as its canonical
// string (the form the HTTP and NATS bindings carry in binary mode). An extension whose
// CloudEvents type is not String (a JSON number or boolean in structured mode, or a value a
// program set as a URI, a timestamp or bytes) also records its type under the reserved
// extension TypesExtension ("tandemtypes", name:type pairs), so that the conversion back
// restores it: a conversion in either direction, and any chain of them through any content
// mode, is lossless. Data is the event's data, byte for byte: the JSON value of "data" when
// datacontenttype is JSON (or absent), the text of "data" when it is a string, the decoded
// bytes of "data_base64" otherwise.
//
// What does not convert fails with a typed error, and nothing is half converted: an
// extension name that is not CloudEvents' (ASCII letters and digits), an
// extension that shadows a field of the table above or the reserved name, a specversion
// other than 1.0, an invalid event (see envelope.Validate), or an unparsable value of
// a typed extension.
package cloudevents
