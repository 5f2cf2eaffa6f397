package agentd

// Canary sends Percent of an agent's runs that pin no version to Version instead
// of the active one: with a session id, the same sessions every time (the choice
// is a hash of the agent and the session, see InCanary); without, at random per
// run.
type Canary struct {
	Version int     `json:"version"`
	Percent float64 `json:"percent"` // 0 to 100
}

// Evaluation outcomes of a version (Version.EvalStatus).
const (
	EvalPassed = "passed"
	EvalFailed = "failed"
)

// CanaryBuckets is how finely a canary's percent divides runs: a run or session
// falls in one of this many buckets, and buckets below Percent × CanaryBuckets / 100
// go to the canary.
const CanaryBuckets = 10_000

// InCanary reports whether bucket (0 ≤ bucket < CanaryBuckets) goes to the canary.
// A session's bucket never changes, so raising the percent only moves sessions
// onto the canary and lowering it only moves them back: no session flips between
// the two at a fixed percent.
func (c *Canary) InCanary(bucket int) bool {
	return c != nil && bucket < int(c.Percent*CanaryBuckets/100+0.5)
}
