// Package anthropic is the llm.Provider for Anthropic's Messages API
// (POST /v1/messages), whole and streamed. It is plain net/http and encoding/json,
// not Anthropic's SDK: the caller owns retries and fallback, so each call makes
// exactly one HTTP request, and a call costs one small JSON encode and decode.
//
// What goes on the wire:
//
//   - System messages, wherever they stand, become the top-level "system" string,
//     joined with blank lines: the Messages API has no system role.
//   - Consecutive messages of the same role are merged into one, because the API
//     requires user and assistant turns to alternate: plain texts joined with
//     blank lines, anything else as one list of content blocks.
//   - The first remaining message must be the user's. A conversation that starts
//     with an assistant message fails with a KindPermanent error rather than being
//     patched with an invented user turn. A final assistant message is sent as is:
//     Anthropic treats it as a prefill that the reply continues.
//   - max_tokens is required by Anthropic; a request with MaxTokens ≤ 0 asks for
//     DefaultMaxTokens.
//   - Temperature is clamped to Anthropic's range, 0 to 1 (agentd accepts up to 2
//     for OpenAI-style providers); a NaN temperature is a KindPermanent error.
//   - Content is sent as a plain string; Example is not on the wire. Parts become
//     content blocks: text, and images by URL ({"type": "url"}) for http(s) URLs or
//     in base64 ({"type": "base64", "media_type"}) for data: URLs. Anthropic takes
//     JPEG, PNG, GIF and WebP, in user messages and tool results; CheckRequest
//     refuses other media types, data: URLs not in base64, and images elsewhere.
//     Empty text parts are left out (the API refuses empty text blocks); Detail is
//     OpenAI's and is ignored.
//   - An assistant message's ToolCalls become tool_use blocks after its text, each
//     with its Arguments as the input object ("" as {}); CheckRequest refuses
//     arguments that are not a JSON object. A tool message becomes a tool_result
//     block in a user turn. Results must come right after the calls, and the API
//     wants all results of one assistant turn in the next user message, ahead of
//     any text: consecutive tool messages, and user messages after them, merge
//     into one user turn. A result anywhere else, or without a ToolCallID, fails
//     with a KindPermanent error.
//   - Tools are sent with their Parameters as input_schema ({"type": "object",
//     "properties": {}} for none) and Strict as Anthropic's own strict, which has
//     the same meaning (inputs sampled to match the schema). ToolChoice auto,
//     required, function and none are Anthropic's auto, any, tool and none;
//     ParallelToolCalls false is disable_parallel_tool_use, inside tool_choice
//     (auto when there is no choice). Without tools neither is sent.
//   - A ResponseFormat is asked through a forced tool: one tool named after the
//     schema (json_response if it has no name), its schema as input_schema
//     ({"type": "object"} for json_object), with tool_choice forcing one call of
//     it. That works on every model and in streams, and Anthropic validates the
//     input against the schema. Since it takes the tools, CheckRequest refuses a
//     request with both tools and a response format; with DropParams the format
//     is dropped and the tools kept.
//
// What comes back: Text is all text blocks concatenated; thinking and other
// block types are ignored, as are their stream deltas. tool_use blocks are
// ToolCalls in order, with the input's JSON text compacted as Anthropic
// re-serializes it; in a stream, the input_json_delta pieces of each block
// concatenated byte for byte (the model's spacing kept, so the same call may
// differ in space between Complete and Stream). stop_reason tool_use is
// FinishToolCalls. With a response format the forced tool's input is Text
// instead (emitted as it streams) and the finish reason stop. Usage is what
// Anthropic reports, with InputTokens the sum of input_tokens,
// cache_creation_input_tokens and cache_read_input_tokens, since all three are
// billed input. A stream's usage is reported when the stream completes, or when it
// fails after Anthropic sent its final counts (message_delta); before that the only
// output count is message_start's placeholder, which would undercount the text
// already emitted, so Usage is left empty for the caller to estimate. A failed
// stream also returns the tool calls begun, the last one's arguments as far as
// they came: for accounting, never to run.
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
// Not supported: documents, extended thinking (its blocks are skipped, not
// returned), server tools, is_error on tool results (the neutral request has no
// such flag), prompt-caching controls (cache_control; cached tokens are still
// counted), top_k, and batches.
package anthropic
