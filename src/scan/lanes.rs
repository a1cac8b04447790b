//! Two-lane forward search: the matcher's unanchored leftmost-first search over a long span,
//! run as two interleaved lazy-DFA walks so that the CPU overlaps two independent chains of
//! table lookups. One walk waits on each byte's transition before it can take the next
//! (~1.7 ns per byte here); two walks take about 2 ns per pair of bytes. Measured on the load
//! test's 2 KB prompt: 3.7 → 2.45 µs (built-ins), 4.1 → 3.05 µs (shipped packs); 8 KB of clean
//! prose 13.5 → 8.3 µs; Japanese text without spaces 16.9 → 10.3 µs; number-dense text 3 % faster.
//!
//! A trailing lane walks from the span start; a leading lane starts up to `LEAD` bytes ahead
//! (half of what is left on short spans). Why the answer is exact: whenever the trailing lane
//! finishes by itself, its result is the plain search's. If, at some position `p` at or past
//! the leading lane's start `q`, the trailing lane has seen no match and its DFA state equals
//! the unanchored start state for `p`, then no match starts before `p` (it would have ended —
//! a match state — or still be in progress — a different state), so the answer is the
//! leftmost-first match at or after `p`, which is the leading lane's: its extra threads from
//! `[q, p)` never match, and in leftmost-first order they can only keep it alive longer, never
//! change what it reports. The leading lane then trails, and a new one starts ahead of it. The
//! lanes report where the match ends; the matcher has the regex engine find it again from at
//! most the pattern's maximum length before that end (no match starts earlier).
//! Anything unusual (a cache that gave up, a quit byte, a cache clear under a compared state)
//! returns `None` and the caller runs the plain search.

use std::panic::{RefUnwindSafe, UnwindSafe};

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::LazyStateID;
use regex_automata::nfa::thompson::NFA;
use regex_automata::util::pool::Pool;
use regex_automata::{HalfMatch, Input, MatchKind};

/// Spans shorter than this are searched the plain way: below it the saving is a fraction of
/// a microsecond, not worth a second lazy-DFA cache (~1 MB) per worker thread.
pub(crate) const MIN_LANE_SPAN: usize = 1024;

/// Below this distance a second lane costs more (a start state, a clean check) than it saves.
const MIN_LEAD: usize = 128;

/// The matcher tries two lanes again only after a candidate at least this far from where its
/// search began (candidates come in clusters).
pub(crate) const LANE_GAP: usize = LEAD;

/// How far ahead of the trailing lane the leading lane starts. Each time the trailing lane
/// catches up with a clean state, the leading lane takes over and a new one starts this far
/// ahead, so a long span is walked by two lanes all along.
const LEAD: usize = 1024;

/// Budget of the lanes' shared lazy-DFA cache (as the matcher's own engine's).
const CACHE_CAPACITY: usize = 4 << 20;

type CacheFn = Box<dyn Fn() -> Cache + Send + Sync + UnwindSafe + RefUnwindSafe>;

/// The compiled two-lane searcher; `Send + Sync`. One lazy-DFA cache per thread (from the
/// pool) serves both lanes — half the memory of one each; a cache clear while both walk would
/// renumber the other lane's state, so a clear then abandons the lanes.
pub(crate) struct TwoLane {
    dfa: DFA,
    caches: Pool<Cache, CacheFn>,
}

impl std::fmt::Debug for TwoLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoLane").finish_non_exhaustive()
    }
}

/// One lane's walk.
struct Lane {
    sid: LazyStateID,
    at: usize,
    mat: Option<HalfMatch>,
    dead: bool,
}

/// The walk could not be completed the fast way; use the plain search.
struct Undecided;

impl TwoLane {
    /// A forward lazy DFA over `nfa`, which must hold the matcher's patterns in its priority
    /// order (the matcher shares the stream-liveness NFA: no second copy of the patterns).
    /// `None` when the lazy DFA cannot be built for them.
    pub(crate) fn new(nfa: NFA) -> Option<TwoLane> {
        let config = DFA::config()
            .match_kind(MatchKind::LeftmostFirst)
            .cache_capacity(CACHE_CAPACITY)
            // No give-up heuristic here: a clear while two lanes walk already hands the span
            // to the plain search, which has its own.
            .minimum_cache_clear_count(None)
            .unicode_word_boundary(true);
        let dfa = DFA::builder().configure(config).build_from_nfa(nfa).ok()?;
        let for_pool = dfa.clone();
        let create: CacheFn = Box::new(move || for_pool.create_cache());
        Some(TwoLane {
            dfa,
            caches: Pool::new(create),
        })
    }

    /// Where the leftmost-first match in `hay[pos..end]` ends, and its pattern, as the plain
    /// unanchored search sees it (look-around sees the whole haystack); `None` (outer) when the
    /// caller must run that search itself.
    pub(crate) fn find_end(&self, hay: &[u8], pos: usize, end: usize) -> Option<Option<HalfMatch>> {
        let mut guard = self.caches.get();
        forward_two_lane(&self.dfa, &mut guard, hay, pos, end).ok()
    }
}

fn start_lane(
    dfa: &DFA,
    cache: &mut Cache,
    hay: &[u8],
    at: usize,
    end: usize,
) -> Result<Lane, Undecided> {
    let sid = dfa
        .start_state_forward(cache, &Input::new(hay).span(at..end))
        .map_err(|_| Undecided)?;
    Ok(Lane {
        sid,
        at,
        mat: None,
        dead: false,
    })
}

/// Consumes `hay[lane.at]`, exactly as the regex engine's forward search does. With `shared`
/// (another lane holds a state of the same cache), a cache clear is an `Undecided`.
#[inline(always)]
fn step(
    dfa: &DFA,
    cache: &mut Cache,
    lane: &mut Lane,
    hay: &[u8],
    shared: bool,
) -> Result<(), Undecided> {
    let byte = hay[lane.at];
    let clears = cache.clear_count();
    let mut next = if lane.sid.is_tagged() {
        dfa.next_state(cache, lane.sid, byte)
            .map_err(|_| Undecided)?
    } else {
        dfa.next_state_untagged(cache, lane.sid, byte)
    };
    if next.is_tagged() {
        if next.is_unknown() {
            next = dfa
                .next_state(cache, lane.sid, byte)
                .map_err(|_| Undecided)?;
        }
        if next.is_match() {
            lane.mat = Some(HalfMatch::new(dfa.match_pattern(cache, next, 0), lane.at));
        } else if next.is_dead() {
            lane.dead = true;
        } else if next.is_quit() {
            return Err(Undecided);
        }
    }
    lane.sid = next;
    lane.at += 1;
    if shared && cache.clear_count() != clears {
        return Err(Undecided);
    }
    Ok(())
}

/// Runs a lane alone to its result (dead state, or the end of the span and the end-of-input
/// transition).
fn finish(
    dfa: &DFA,
    cache: &mut Cache,
    mut lane: Lane,
    hay: &[u8],
    end: usize,
) -> Result<Option<HalfMatch>, Undecided> {
    while !lane.dead && lane.at < end {
        if !lane.sid.is_tagged() {
            // Hot loop: the state stays in a register while transitions are ordinary.
            let (mut sid, mut at) = (lane.sid, lane.at);
            while at < end {
                let next = dfa.next_state_untagged(cache, sid, hay[at]);
                if next.is_tagged() {
                    break;
                }
                sid = next;
                at += 1;
            }
            (lane.sid, lane.at) = (sid, at);
            if at >= end {
                break;
            }
        }
        step(dfa, cache, &mut lane, hay, false)?;
    }
    if !lane.dead {
        match hay.get(end) {
            Some(&b) => {
                let sid = dfa.next_state(cache, lane.sid, b).map_err(|_| Undecided)?;
                if sid.is_match() {
                    lane.mat = Some(HalfMatch::new(dfa.match_pattern(cache, sid, 0), end));
                } else if sid.is_quit() {
                    return Err(Undecided);
                }
            }
            None => {
                let sid = dfa.next_eoi_state(cache, lane.sid).map_err(|_| Undecided)?;
                if sid.is_match() {
                    lane.mat = Some(HalfMatch::new(dfa.match_pattern(cache, sid, 0), hay.len()));
                }
            }
        }
    }
    Ok(lane.mat)
}

/// True when lane 1 (no match seen yet) is in exactly the state a fresh unanchored search
/// would start in at its position: nothing that began earlier is still in progress.
fn is_clean(
    dfa: &DFA,
    cache: &mut Cache,
    lane: &Lane,
    hay: &[u8],
    end: usize,
) -> Result<bool, Undecided> {
    let clears = cache.clear_count();
    let Ok(start) = dfa.start_state_forward(cache, &Input::new(hay).span(lane.at..end)) else {
        return Ok(false);
    };
    // A cache clear renumbers states: the comparison would be meaningless.
    if cache.clear_count() != clears {
        return Err(Undecided);
    }
    Ok(start == lane.sid)
}

fn forward_two_lane(
    dfa: &DFA,
    cache: &mut Cache,
    hay: &[u8],
    pos: usize,
    end: usize,
) -> Result<Option<HalfMatch>, Undecided> {
    let mut trail = start_lane(dfa, cache, hay, pos, end)?;
    let mut lead = match lead_start(hay, pos, end) {
        Some(q) => Some((q, q - pos, start_lead(dfa, cache, hay, q, end)?)),
        None => None,
    };
    while let Some((q, dist, ref mut ahead)) = lead {
        if trail.dead || trail.at >= end {
            break;
        }
        if !run_both(dfa, &*cache, &mut trail, ahead, q, hay, end) {
            step(dfa, cache, &mut trail, hay, true)?;
            if !ahead.dead && ahead.at < end {
                step(dfa, cache, ahead, hay, true)?;
            }
        }
        if trail.mat.is_some() {
            // The trailing lane owns the leftmost match; the leading one was speculation.
            lead = None;
            continue;
        }
        if trail.at >= q + dist {
            // Never clean (no whitespace, or one long candidate): stop paying for speculation.
            lead = None;
            continue;
        }
        if trail.at < q || trail.at >= end || !is_resync_point(hay, trail.at) {
            continue;
        }
        if is_clean(dfa, cache, &trail, hay, end)? {
            // Nothing that began before `trail.at` can match: the leading lane's answer is the
            // answer. It becomes the trailing lane, and a new lane starts ahead of it.
            let (_, _, next) = lead.take().ok_or(Undecided)?;
            trail = next;
            lead = match lead_start(hay, trail.at, end) {
                Some(q) if !trail.dead => {
                    Some((q, q - trail.at, start_lead(dfa, cache, hay, q, end)?))
                }
                _ => None,
            };
        }
    }
    finish(dfa, cache, trail, hay, end)
}

/// Starts the leading lane; its start state may have to be added to the cache, and a clear
/// then would renumber the trailing lane's state.
fn start_lead(
    dfa: &DFA,
    cache: &mut Cache,
    hay: &[u8],
    at: usize,
    end: usize,
) -> Result<Lane, Undecided> {
    let clears = cache.clear_count();
    let lane = start_lane(dfa, cache, hay, at, end)?;
    if cache.clear_count() != clears {
        return Err(Undecided);
    }
    Ok(lane)
}

/// The hot loop: both lanes advance together with their states in registers while every
/// transition is an ordinary cached one. Stops before any tagged transition (match, dead,
/// unknown: `step` handles those), at the end of either lane's text, when the trailing lane
/// reaches the leading lane's start `q`, and after `q` at each byte worth a clean check.
/// Returns whether it advanced at all.
#[inline(always)]
fn run_both(
    dfa: &DFA,
    cache: &Cache,
    trail: &mut Lane,
    ahead: &mut Lane,
    q: usize,
    hay: &[u8],
    end: usize,
) -> bool {
    if trail.sid.is_tagged() || ahead.sid.is_tagged() || ahead.dead {
        return false;
    }
    let checking = trail.at >= q;
    let stop = if checking { end } else { q };
    let n = (stop - trail.at).min(end.saturating_sub(ahead.at));
    let (mut s1, mut s2, mut a1, mut a2) = (trail.sid, ahead.sid, trail.at, ahead.at);
    for _ in 0..n {
        let x1 = dfa.next_state_untagged(cache, s1, hay[a1]);
        let x2 = dfa.next_state_untagged(cache, s2, hay[a2]);
        if x1.is_tagged() | x2.is_tagged() {
            break;
        }
        (s1, s2) = (x1, x2);
        a1 += 1;
        a2 += 1;
        if checking && is_resync_point(hay, a1) {
            break;
        }
    }
    let advanced = a1 != trail.at;
    (trail.sid, trail.at, ahead.sid, ahead.at) = (s1, a1, s2, a2);
    advanced
}

/// Where a leading lane starts for a trailing lane at `at`: `LEAD` bytes ahead (on a
/// character boundary), or `None` when too little text is left to be worth a second lane.
fn lead_start(hay: &[u8], at: usize, end: usize) -> Option<usize> {
    // Half of what is left, so a short text is walked in two halves; long ones in pipelined
    // pieces of at most `LEAD`.
    let lead = LEAD.min((end - at) / 2);
    if lead < MIN_LEAD {
        return None;
    }
    let mut q = at + lead;
    while q > at && (hay[q] & 0xC0) == 0x80 {
        q -= 1;
    }
    Some(q)
}

/// Positions where a prose scan is usually back in its start state (worth a check): after
/// ASCII whitespace or punctuation, or after a whole non-ASCII character (text without
/// spaces, such as Chinese or Japanese).
fn is_resync_point(hay: &[u8], at: usize) -> bool {
    let b = hay[at - 1];
    is_resync_byte(b) || (b >= 0x80 && hay.get(at).is_none_or(|n| !(0x80..0xC0).contains(n)))
}

fn is_resync_byte(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'.' | b',' | b';' | b'!' | b'?')
}
