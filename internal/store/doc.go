// Package store holds all of agentd's SQL. There is one implementation; a small
// dialect struct covers what differs between SQLite and PostgreSQL (placeholders,
// DSNs, error codes), and each dialect has its own numbered, embedded migrations.
//
// Reads go to a pool of connections. Writes go through one writer goroutine on one
// connection that groups the writes of many requests into a single transaction
// (group commit), each in its own savepoint so one failing write does not undo the
// others; every caller still waits until the commit that contains its write is
// durable.
package store
