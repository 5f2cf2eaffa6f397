package session

import (
	"container/list"
	"sync"

	"github.com/agentd/agentd"
)

// recentTurns keeps the newest turns of recently used sessions in memory, so that
// a turn's history is read from the database only when its session was not used
// lately. Without it the history read is the largest cost of a session turn, and it
// grows with the length of the history that fits the model's window.
//
// It is a cache of session_turns written only by the holder of the session's
// lease (Service.Begin's Turn): the turn reads the cache or fills it from the
// database, and appends its own turn in the commit hook of the transaction that
// stores it. Deleting a session (Service.Delete, Service.SweepIdle) takes the lease
// and forgets the session when the delete commits. Readers without the lease
// (estimates) only read it.
//
// A nil *recentTurns (PostgreSQL, see New) caches nothing: every method is then a
// miss or does nothing.
type recentTurns struct {
	maxBytes        int // total text kept, over all sessions
	maxSessionBytes int // text kept for one session; older turns are dropped

	stats cacheStats // windows served from the cache, and read from the database

	mu      sync.Mutex
	bytes   int
	entries map[string]*list.Element // of *recentEntry
	lru     list.List                // front: most recently used
}

type recentEntry struct {
	key   string
	turns []agentd.Turn // a suffix of the session, oldest first
	total int           // the session's number of turns
	bytes int
}

// complete reports whether the cached turns are the whole session.
func (e *recentEntry) complete() bool { return len(e.turns) == e.total }

func newRecentTurns(maxBytes int) *recentTurns {
	return &recentTurns{maxBytes: maxBytes, maxSessionBytes: max(maxBytes/16, 1), entries: map[string]*list.Element{}}
}

func turnBytes(t agentd.Turn) int {
	n := len(t.User) + len(t.Assistant) + 64
	for _, r := range t.Results {
		n += len(r.CallID) + len(r.Content) + 32
	}
	for _, im := range t.Images {
		n += len(im.URL) + 32
	}
	for _, c := range t.Calls {
		n += len(c.ID) + len(c.Name) + len(c.Arguments) + 48
	}
	return n
}

// get returns key's cached turns (oldest first, not to be modified) and the
// session's turn count.
func (c *recentTurns) get(key string) (turns []agentd.Turn, total int, ok bool) {
	if c == nil {
		return nil, 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.entries[key]
	if el == nil {
		return nil, 0, false
	}
	c.lru.MoveToFront(el)
	e := el.Value.(*recentEntry)
	return e.turns, e.total, true
}

// put caches turns (oldest first, the newest of a session of total turns).
func (c *recentTurns) put(key string, turns []agentd.Turn, total int) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(key)
	e := &recentEntry{key: key, turns: turns, total: total}
	for _, t := range turns {
		e.bytes += turnBytes(t)
	}
	c.trim(e)
	c.entries[key] = c.lru.PushFront(e)
	c.bytes += e.bytes
	c.evict()
}

// add appends a committed turn to key's entry, if key is cached.
func (c *recentTurns) add(key string, t agentd.Turn) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.entries[key]
	if el == nil {
		return
	}
	e := el.Value.(*recentEntry)
	c.bytes -= e.bytes
	e.turns = append(e.turns, t)
	e.total++
	e.bytes += turnBytes(t)
	c.trim(e)
	c.bytes += e.bytes
	c.lru.MoveToFront(el)
	c.evict()
}

// trim drops e's oldest turns beyond the per-session bound.
func (c *recentTurns) trim(e *recentEntry) {
	drop := 0
	for e.bytes > c.maxSessionBytes && drop < len(e.turns)-1 {
		e.bytes -= turnBytes(e.turns[drop])
		drop++
	}
	if drop > 0 {
		e.turns = append([]agentd.Turn(nil), e.turns[drop:]...)
	}
}

// evict drops least recently used sessions while over the total bound.
func (c *recentTurns) evict() {
	for c.bytes > c.maxBytes && c.lru.Len() > 1 {
		c.removeLocked(c.lru.Back().Value.(*recentEntry).key)
	}
}

func (c *recentTurns) removeLocked(key string) {
	if el := c.entries[key]; el != nil {
		c.bytes -= el.Value.(*recentEntry).bytes
		c.lru.Remove(el)
		delete(c.entries, key)
	}
}

// forget drops key.
func (c *recentTurns) forget(key string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(key)
}

// clear drops every session.
func (c *recentTurns) clear() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.lru.Init()
	c.bytes = 0
}
