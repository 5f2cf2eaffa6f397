// Package tokens counts tokens the way a model family's tokenizer does, so that holds,
// prompt trimming and estimated usage agree with what a provider will bill. Tokenizer
// tables are compiled into the binary: counting never downloads anything, because
// agentd runs on machines without internet access.
package tokens
