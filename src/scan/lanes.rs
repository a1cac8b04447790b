//! Multi-lane forward search: the matcher's unanchored leftmost-first search over a long span,
//! run as up to four interleaved lazy-DFA walks so that the CPU overlaps independent chains of
//! table lookups. One walk waits on each byte's transition before it can take the next
//! (~1.7 ns per byte here); four walks in step take about 2.2 ns per four bytes. Measured on
//! the load test's 2 KB prompt (walks alone: one lane 3.3 µs, two 1.66, three 1.21, four
//! 1.04, six 1.10); whole searches: built-ins 1.75 → 1.45 µs and shipped packs 1.98 → 1.57 µs
//! against two lanes, 3.7 / 4.1 µs with one.
//!
//! Lane 0 trails (walks from the span start); each later lane starts further ahead (evenly
//! over what is left, at most `LEAD` apart) and is speculation that the lane before it hands
//! over to. Why the answer is exact: whenever the trailing lane finishes by itself, its result
//! is the plain search's. If, at some position `p` at or past its successor's start `q`, a
//! lane has seen no match and its DFA state equals the unanchored start state for `p`, then no
//! match starts before `p` within its reach (it would have ended — a match state — or still be
//! in progress — a different state), so its answer is the leftmost-first match at or after
//! `p`, which is its successor's: the successor's extra threads from `[q, p)` never match, and
//! in leftmost-first order they can only keep it alive longer, never change what it reports.
//! The successor takes its place (and its `q`, for the lane before), and new lanes start
//! ahead of the last one while there is text left. A lane that sees a match keeps its own
//! result and the lanes after it are dropped. The lanes report where the match ends and its
//! pattern; [`Starts`] walks back from there to where it begins (failing that, the matcher
//! has the regex engine find it again from at most the pattern's maximum length before that
//! end: no match starts earlier). Anything unusual (a cache that gave up, a quit
//! byte, a cache clear under a compared state) returns `None` and the caller runs the plain
//! search.

use std::panic::{RefUnwindSafe, UnwindSafe};

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::LazyStateID;
use regex_automata::nfa::thompson::NFA;
use regex_automata::util::pool::Pool;
use regex_automata::{HalfMatch, Input, MatchKind};

/// Spans shorter than this are searched the plain way (room for four lanes of `MIN_LEAD`).
/// Measured, plain / lanes: 300 B 486 / 332 ns, 512 B 838 / 479 ns, 1000 B 1650 / 789 ns.
/// Not lower: the lanes' lazy-DFA cache (~0.5 MB per worker thread) would then be built for
/// every short chat turn too, for ~0.15 µs per text (1,000-stream RSS 98.0 → 99.1–99.7 MB).
pub(crate) const MIN_LANE_SPAN: usize = 4 * MIN_LEAD;

/// Below this distance another lane costs more (a start state, a clean check) than it saves.
const MIN_LEAD: usize = 128;

/// The matcher tries the lanes again only after a candidate at least this far from where its
/// search began (candidates come in clusters).
pub(crate) const LANE_GAP: usize = LEAD;

/// Most distance between two lanes' starts. Each time a lane catches up with a clean state,
/// its successor takes over and a new lane starts ahead of the last, so a long span is walked
/// by all lanes all along, in pipelined pieces of at most this length.
const LEAD: usize = 1024;

/// Lanes walking at once: four overlap well (measured on the 2 KB prompt: one lane 3.3 µs,
/// two 1.66, three 1.21, four 1.04, six 1.10 — the core runs out of room for more chains).
const LANES: usize = 4;

/// How far the other lanes may walk while one looks for its clean point (usually the next
/// space).
const CHECK_STRIDE: usize = 32;

/// Budget of the lanes' shared lazy-DFA cache (as the matcher's own engine's).
const CACHE_CAPACITY: usize = 4 << 20;

type CacheFn = Box<dyn Fn() -> Cache + Send + Sync + UnwindSafe + RefUnwindSafe>;

/// The compiled multi-lane searcher; `Send + Sync`. One lazy-DFA cache per thread (from the
/// pool) serves all lanes — a quarter of the memory of one each; a cache clear while several
/// walk would renumber the others' states, so a clear then abandons the lanes.
pub(crate) struct Lanes {
    dfa: DFA,
    caches: Pool<Cache, CacheFn>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes").finish_non_exhaustive()
    }
}

/// One lane's walk.
#[derive(Clone, Copy)]
struct Lane {
    sid: LazyStateID,
    at: usize,
    mat: Option<HalfMatch>,
    dead: bool,
    /// Where the lane before this one may hand over to it: this lane's start, or the start of
    /// a lane that handed over to it.
    q: usize,
}

/// The walk could not be completed the fast way; use the plain search.
struct Undecided;

impl Lanes {
    /// A forward lazy DFA over `nfa`, which must hold the matcher's patterns in its priority
    /// order (the matcher shares the stream-liveness NFA: no second copy of the patterns).
    /// `None` when the lazy DFA cannot be built for them.
    pub(crate) fn new(nfa: NFA) -> Option<Lanes> {
        let config = DFA::config()
            .match_kind(MatchKind::LeftmostFirst)
            .cache_capacity(CACHE_CAPACITY)
            // No give-up heuristic here: a clear while lanes walk already hands the span
            // to the plain search, which has its own.
            .minimum_cache_clear_count(None)
            .unicode_word_boundary(true);
        let (dfa, caches) = build_pooled(config, nfa)?;
        Some(Lanes { dfa, caches })
    }

    /// Where the leftmost-first match in `hay[pos..end]` ends, and its pattern, as the plain
    /// unanchored search sees it (look-around sees the whole haystack); `None` (outer) when the
    /// caller must run that search itself.
    pub(crate) fn find_end(&self, hay: &[u8], pos: usize, end: usize) -> Option<Option<HalfMatch>> {
        let mut guard = self.caches.get();
        forward_lanes(&self.dfa, &mut guard, hay, pos, end).ok()
    }

    /// [`Lanes::find_end`], and whether the cache was cleared meanwhile (tests tell a clear,
    /// which abandons the lanes by design, from any other reason they gave up).
    #[cfg(test)]
    pub(crate) fn find_end_observing_clears(
        &self,
        hay: &[u8],
        pos: usize,
        end: usize,
    ) -> (Option<Option<HalfMatch>>, bool) {
        let mut guard = self.caches.get();
        let clears = guard.clear_count();
        let found = forward_lanes(&self.dfa, &mut guard, hay, pos, end).ok();
        (found, guard.clear_count() != clears)
    }
}

/// Budget of the start finder's lazy-DFA cache: it walks back over one match at a time.
const STARTS_CACHE_CAPACITY: usize = 1 << 20;

/// Where a match the lanes found begins: an anchored reverse lazy DFA over the same patterns
/// (`MatchKind::All`, one start state per pattern), walked back from the match's end — what
/// the regex engine does after its own forward search, without that forward search again
/// over the pattern's whole maximum length before the end (an e-mail's is 281 characters).
pub(crate) struct Starts {
    dfa: DFA,
    caches: Pool<Cache, CacheFn>,
}

impl std::fmt::Debug for Starts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Starts").finish_non_exhaustive()
    }
}

impl Starts {
    /// `reverse` must be the matcher's patterns compiled as a reverse NFA, in priority order.
    pub(crate) fn new(reverse: NFA) -> Option<Starts> {
        let config = DFA::config()
            .match_kind(MatchKind::All)
            .starts_for_each_pattern(true)
            .cache_capacity(STARTS_CACHE_CAPACITY)
            .unicode_word_boundary(true);
        let (dfa, caches) = build_pooled(config, reverse)?;
        Some(Starts { dfa, caches })
    }

    /// The leftmost `s >= pos` where `hay[s..end]` matches `pattern` — the start of the
    /// leftmost-first match that ends at `end` (no match at all starts before it). `None` when
    /// the walk gave up (the caller then searches the plain way).
    pub(crate) fn start(
        &self,
        hay: &[u8],
        pos: usize,
        end: usize,
        pattern: regex_automata::PatternID,
    ) -> Option<usize> {
        let input = Input::new(hay)
            .span(pos..end)
            .anchored(regex_automata::Anchored::Pattern(pattern));
        let mut guard = self.caches.get();
        let found = self.dfa.try_search_rev(&mut guard, &input).ok()??;
        (found.pattern() == pattern).then_some(found.offset())
    }
}

/// A lazy DFA over `nfa` and a pool of per-thread caches for it.
fn build_pooled(
    config: regex_automata::hybrid::dfa::Config,
    nfa: NFA,
) -> Option<(DFA, Pool<Cache, CacheFn>)> {
    let dfa = DFA::builder().configure(config).build_from_nfa(nfa).ok()?;
    let for_pool = dfa.clone();
    let create: CacheFn = Box::new(move || for_pool.create_cache());
    Some((dfa, Pool::new(create)))
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
        q: at,
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
        if !lane.sid.is_tagged() && walk_alone(dfa, cache, &mut lane, hay, end, false) {
            break;
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

/// True when `lane` (no match seen yet) is in exactly the state a fresh unanchored search
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

/// Starts a lane ahead of the others; its start state may have to be added to the cache, and
/// a clear then would renumber the other lanes' states.
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

/// Lanes in flight, in text order: lane 0 trails (its result is the answer), each later lane
/// is speculation that its predecessor hands over to. At most `LANES`; `Copy` so that a
/// search keeps them on the stack.
struct Flight {
    lanes: [Lane; LANES],
    len: usize,
    /// False once a lane walked `LEAD` past its successor's start without a clean state (text
    /// with no resync points): no new lanes are started for the rest of the span.
    speculate: bool,
}

impl Flight {
    /// Drops every lane after `i`: lane `i` found a match (its result is its own) or will
    /// never hand over.
    fn truncate_after(&mut self, i: usize) {
        self.len = self.len.min(i + 1);
    }

    /// Lane `i` is clean past its successor's start: its answer is the successor's. The
    /// successor takes its place, and inherits its start as the position the lane before must
    /// reach to hand over in turn.
    fn merge_into_next(&mut self, i: usize) {
        let q = self.lanes[i].q;
        self.lanes.copy_within(i + 1..self.len, i);
        self.len -= 1;
        if i > 0 {
            self.lanes[i].q = q;
        }
    }
}

fn forward_lanes(
    dfa: &DFA,
    cache: &mut Cache,
    hay: &[u8],
    pos: usize,
    end: usize,
) -> Result<Option<HalfMatch>, Undecided> {
    let first = start_lane(dfa, cache, hay, pos, end)?;
    let mut f = Flight {
        lanes: [first; LANES],
        len: 1,
        speculate: true,
    };
    loop {
        let checking = hand_over(dfa, cache, hay, end, &mut f)?;
        if f.len < LANES && f.speculate {
            spawn(dfa, cache, hay, end, &mut f)?;
        }
        if f.len == 1 {
            // Nothing left to overlap with: the plain walk from here.
            return finish(dfa, cache, f.lanes[0], hay, end);
        }
        // While a lane looks for its clean point, the others must not run far ahead alone.
        let cap = if checking { CHECK_STRIDE } else { usize::MAX };
        advance_free(dfa, cache, hay, end, cap, &mut f)?;
    }
}

/// Lanes past their successor's start: each hands over at its first clean resync point, or
/// walks on to the next one. A lane with a match keeps its own result and ends the
/// speculation after it. Returns whether a lane is still looking for its clean point.
fn hand_over(
    dfa: &DFA,
    cache: &mut Cache,
    hay: &[u8],
    end: usize,
    f: &mut Flight,
) -> Result<bool, Undecided> {
    let mut checking = false;
    let mut i = 0;
    while i + 1 < f.len {
        let lane = f.lanes[i];
        if lane.mat.is_some() || lane.dead {
            f.truncate_after(i);
            break;
        }
        let next_q = f.lanes[i + 1].q;
        if lane.at < next_q {
            i += 1;
            continue;
        }
        if lane.at >= end || lane.at >= next_q + LEAD {
            // Never clean (no resync point, or one long candidate): stop speculating.
            f.truncate_after(i);
            f.speculate = false;
            break;
        }
        if is_resync_point(hay, lane.at) && is_clean(dfa, cache, &lane, hay, end)? {
            f.merge_into_next(i);
            continue;
        }
        walk_to_resync(dfa, cache, &mut f.lanes[i], hay, end)?;
        let lane = f.lanes[i];
        if lane.mat.is_some() || lane.dead {
            f.truncate_after(i);
            break;
        }
        checking = true;
        i += 1;
    }
    Ok(checking)
}

/// Starts lanes ahead of the last one, evenly over what is left (at most `LEAD` apart), while
/// there is room for them: a new lane is worth it only with `MIN_LEAD` bytes of its own.
fn spawn(
    dfa: &DFA,
    cache: &mut Cache,
    hay: &[u8],
    end: usize,
    f: &mut Flight,
) -> Result<(), Undecided> {
    let last = f.lanes[f.len - 1];
    if last.mat.is_some() || last.dead || last.at >= end {
        return Ok(());
    }
    let mut free = LANES - f.len;
    let rest = end - last.at;
    while free > 0 && rest / (free + 1) < MIN_LEAD {
        free -= 1;
    }
    if free == 0 {
        return Ok(());
    }
    let gap = LEAD.min(rest / (free + 1));
    for j in 1..=free {
        let mut q = last.at + j * gap;
        while (hay[q] & 0xC0) == 0x80 {
            q -= 1;
        }
        if q <= f.lanes[f.len - 1].at {
            break;
        }
        f.lanes[f.len] = start_lead(dfa, cache, hay, q, end)?;
        f.len += 1;
    }
    Ok(())
}

/// Advances every lane that walks freely (the last lane towards the end, the others towards
/// their successor's start) together, with all states in registers, until one of them needs
/// more than an ordinary cached transition; then each of them takes one full step.
fn advance_free(
    dfa: &DFA,
    cache: &mut Cache,
    hay: &[u8],
    end: usize,
    cap: usize,
    f: &mut Flight,
) -> Result<(), Undecided> {
    let mut idx = [0usize; LANES];
    let mut count = 0;
    let mut room = cap;
    for i in 0..f.len {
        let lane = &f.lanes[i];
        let limit = if i + 1 < f.len { f.lanes[i + 1].q } else { end };
        if lane.dead || lane.at >= limit {
            continue;
        }
        room = room.min(limit - lane.at);
        idx[count] = i;
        count += 1;
    }
    if count == 0 {
        return Ok(());
    }
    let tagged = (0..count).any(|k| f.lanes[idx[k]].sid.is_tagged());
    if !tagged {
        let stopped = match count {
            1 => run::<1>(dfa, cache, hay, &mut f.lanes, &idx, room),
            2 => run::<2>(dfa, cache, hay, &mut f.lanes, &idx, room),
            3 => run::<3>(dfa, cache, hay, &mut f.lanes, &idx, room),
            _ => run::<LANES>(dfa, cache, hay, &mut f.lanes, &idx, room),
        };
        // The others go on at the next round; the lane that stopped takes its full step.
        return match stopped {
            None => Ok(()),
            Some(k) => step(dfa, cache, &mut f.lanes[idx[k]], hay, true),
        };
    }
    for &i in &idx[..count] {
        step(dfa, cache, &mut f.lanes[i], hay, true)?;
    }
    Ok(())
}

/// The hot loop: `M` lanes (`idx`) advance together, one byte each in turn, for at most
/// `room` bytes or until a lane meets a transition that is not an ordinary cached one: that
/// lane (returned) stays before it, the lanes before it in the turn are one byte further.
///
/// Each lane's state is committed as soon as it is checked (no second set of registers for
/// the next states), and transitions are unchecked: the four lanes' loop was 54 instructions
/// per step with a bounds check per lane and byte and its states spilled to the stack.
#[inline(always)]
fn run<const M: usize>(
    dfa: &DFA,
    cache: &Cache,
    hay: &[u8],
    lanes: &mut [Lane; LANES],
    idx: &[usize; LANES],
    room: usize,
) -> Option<usize> {
    let mut sid: [LazyStateID; M] = std::array::from_fn(|k| lanes[idx[k]].sid);
    let text: [&[u8]; M] = std::array::from_fn(|k| {
        let at = lanes[idx[k]].at;
        &hay[at..at + room]
    });
    let mut walked = 0;
    let mut stopped = None;
    'steps: while walked < room {
        for k in 0..M {
            // SAFETY: `sid[k]` is untagged (checked by the caller for the first step, below
            // for every later one) and came from this cache, which cannot have been cleared
            // since: the caller aborts the lanes (`Undecided`) on any clear, and this loop
            // only reads the cache. Such an id is valid for `next_state_untagged_unchecked`.
            let next = unsafe { dfa.next_state_untagged_unchecked(cache, sid[k], text[k][walked]) };
            if next.is_tagged() {
                stopped = Some(k);
                break 'steps;
            }
            sid[k] = next;
        }
        walked += 1;
    }
    for k in 0..M {
        let lane = &mut lanes[idx[k]];
        lane.sid = sid[k];
        lane.at += walked + usize::from(stopped.is_some_and(|s| k < s));
    }
    stopped
}

/// A lane past its successor's start walks alone to the next position worth a clean check
/// (or a transition that needs a full step, which it then takes).
fn walk_to_resync(
    dfa: &DFA,
    cache: &mut Cache,
    lane: &mut Lane,
    hay: &[u8],
    end: usize,
) -> Result<(), Undecided> {
    if !lane.sid.is_tagged() && walk_alone(dfa, cache, lane, hay, end, true) {
        return Ok(());
    }
    step(dfa, cache, lane, hay, true)
}

/// One lane's hot loop: the state stays in a register while transitions are ordinary. Stops
/// before a transition that needs a full step (returns false), or — true — at the end of the
/// span, or with `to_resync` right after a position worth a clean check.
#[inline(always)]
fn walk_alone(
    dfa: &DFA,
    cache: &Cache,
    lane: &mut Lane,
    hay: &[u8],
    end: usize,
    to_resync: bool,
) -> bool {
    let (mut sid, mut at) = (lane.sid, lane.at);
    let mut stopped = false;
    while at < end {
        let next = dfa.next_state_untagged(cache, sid, hay[at]);
        if next.is_tagged() {
            break;
        }
        sid = next;
        at += 1;
        if to_resync && is_resync_point(hay, at) {
            stopped = true;
            break;
        }
    }
    (lane.sid, lane.at) = (sid, at);
    stopped || at >= end
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
