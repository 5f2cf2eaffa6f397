// Package agentd is the domain vocabulary of agentd: agents and their versions,
// demonstrations, principals and scopes, usage, money and the closed set of error
// codes. It imports only the standard library; every other package speaks in its terms.
package agentd
