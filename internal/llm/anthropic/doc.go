// Package anthropic is the llm.Provider for Anthropic's Messages API
// (POST /v1/messages), whole and streamed. It is plain net/http and encoding/json,
// not Anthropic's SDK: the caller owns retries and fallback, so each call makes
// exactly one HTTP request, and a call costs one small JSON encode and decode.
//
// What goes on the wire:
//
//   - System messages, wherever they stand, become the top-level "system" string,
//     joined with blank lines: the Messages API has no system role.
//   - Consecutive messages of the same role are merged into one, joined with blank
//     lines, because the API requires user and assistant turns to alternate.
//   - The first remaining message must be the user's. A conversation that starts
//     with an assistant message fails with a KindPermanent error rather than being
//     patched with an invented user turn. A final assistant message is sent as is:
//     Anthropic treats it as a prefill that the reply continues.
//   - max_tokens is required by Anthropic; a request with MaxTokens ≤ 0 asks for
//     DefaultMaxTokens.
//   - Temperature is clamped to Anthropic's range, 0 to 1 (agentd accepts up to 2
//     for OpenAI-style providers); a NaN temperature is a KindPermanent error.
//   - Content is sent as a plain string. Example is not on the wire.
//
// What comes back: Text is all text blocks concatenated; thinking, tool_use and
// other block types are ignored, as are non-text stream deltas. Usage is what
// Anthropic reports, with InputTokens the sum of input_tokens,
// cache_creation_input_tokens and cache_read_input_tokens, since all three are
// billed input. A stream's usage is reported when the stream completes, or when it
// fails after Anthropic sent its final counts (message_delta); before that the only
// output count is message_start's placeholder, which would undercount the text
// already emitted, so Usage is left empty for the caller to estimate.
//
// Failures are *llm.Error. HTTP statuses are classified by llm.StatusKind (so 429,
// 5xx and Anthropic's 529 overloaded are retryable), with the upstream error type
// as Code and its message as Message. Three refinements read the error body: a
// prompt over the model's window is KindContextLength; an account out of credit
// (400 "credit balance is too low", 400 "reached your specified API usage
// limits", 402 or billing_error, 429 enforced_spend_limit_reached) is
// KindExhausted, since retrying Anthropic is pointless but another provider may
// answer; in-band stream errors are classified by their type.
//
// Not supported: tools, images and documents, extended thinking (its blocks are
// skipped, not returned), prompt-caching controls (cache_control; cached tokens are
// still counted), stop sequences, top_p/top_k, metadata, and batches.
package anthropic
