//go:build reliability

package main

// killRounds is how many times TestKillUnderLoad kills and restarts agentd in the
// long reliability run.
const killRounds = 10
