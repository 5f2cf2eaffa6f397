//go:build !reliability

package main

// killRounds is how many times TestKillUnderLoad kills and restarts agentd. The
// long reliability run (go test -tags reliability ./cmd/agentd) does more.
const killRounds = 1
