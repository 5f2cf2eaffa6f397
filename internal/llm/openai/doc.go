// Package openai is the adapter for every server that speaks OpenAI's chat
// completions API: OpenAI itself, vLLM, Ollama, the llama.cpp server, LM Studio,
// OpenRouter, Groq, Together, Mistral, DeepSeek and Gemini's OpenAI endpoint. It
// posts to BaseURL + "/chat/completions" with plain net/http rather than an SDK,
// so that it makes exactly one HTTP request per call (retries and fallback are the
// caller's, driven by the *llm.Error kinds) and costs little CPU per request.
//
// What it sends: the model; the messages, as role and text or, for a message
// with parts, an array of text and image_url parts (with the image's detail), an
// assistant's tool_calls (with content null when it has no text) and a tool
// message's tool_call_id (the Example flag is not on the wire); the temperature;
// the reply limit as max_tokens or, for OpenAI's reasoning models,
// max_completion_tokens (Options.MaxTokensField); tools, tool_choice,
// parallel_tool_calls and response_format (json_object or json_schema), with
// schemas compacted and checked as JSON; and the client's other params verbatim.
// Streams ask for usage with stream_options.include_usage.
//
// What it reads: each choice's text and tool calls, their arguments exactly as
// the model wrote them (valid JSON or not), its finish reason ("stop", "length",
// "tool_calls", the deprecated "function_call" as llm.FinishToolCalls, anything
// else llm.FinishOther; a reply that calls tools and says "stop", as OpenAI and
// vLLM answer a forced function, is llm.FinishToolCalls), the model that
// answered and the usage the server reported. A stream's tool calls are put
// together from their pieces by index, in order, interleaved or not, and come
// back with the Response, also when the stream fails part way. Usage is never
// invented: a server that reports none leaves Usage zero with Source "", and the
// caller estimates. Reasoning fields (reasoning_content, reasoning) are not part
// of the reply text and are ignored; content given as an array of typed parts
// (Mistral's reasoning models) is read as the concatenation of its "text" parts.
//
// How it fails: a non-2xx reply becomes an *llm.Error with the status, the kind
// from llm.StatusKind, Retry-After, and the upstream's error code and message
// (OpenAI's {"error": {...}} and the shapes vLLM, llama.cpp, Ollama, OpenRouter
// and Gemini use). Two upstream codes refine the kind: a prompt over the model's
// window (context_length_exceeded, or a message about the context length) is
// llm.KindContextLength, and an account out of money (OpenAI's 429
// insufficient_quota, OpenRouter's 402) is llm.KindExhausted. Errors sent inside
// a 200 reply or mid-stream, as vLLM and OpenRouter do, are classified from their
// code and type: server-side failures (server_error and its kin, or a numeric 5xx
// or 429 code) are retryable, anything else permanent, since an upstream that
// names no transient cause has most likely refused the request itself. A stream
// that ends before "data: [DONE]" is retryable; a reply that is not the JSON it
// should be is permanent. So is a request it cannot write (a schema that is not
// JSON, an unknown part type, tool choice or response format, a message with
// both Content and Parts), refused before any call.
package openai
