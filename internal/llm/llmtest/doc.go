// Package llmtest tests providers and the code that calls them. Run is the
// conformance suite every HTTP adapter passes: it serves the adapter's recorded wire
// format (byte for byte as the provider documents it) from an httptest server and
// checks the adapter's requests, replies, usage, errors, retry hints, cancellation
// and broken streams against one provider-neutral expectation. Fake is a scriptable
// provider for tests of callers.
package llmtest
