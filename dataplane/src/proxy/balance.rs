//! Backend selection: pure, no I/O; randomness and load come in as arguments.

use halo_crds::load_balancer::Algorithm;

/// What the balancer needs to know about one backend right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Stable across reloads (hash of the backend's name), for source hashing.
    pub id: u64,
    pub weight: u32,
    pub backup: bool,
    pub up: bool,
    /// Connections or requests in flight.
    pub active: u32,
    /// At its maxConnections.
    pub full: bool,
}

/// Per-request inputs that are not backend state.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickInput {
    /// Hash of the client's address (SourceHash).
    pub source_hash: u64,
    /// Two random numbers (Random2).
    pub random: (u64, u64),
}

/// Mutable balancer state that lives as long as the listener's backend set.
#[derive(Clone, Debug, Default)]
pub struct BalanceState {
    /// Smooth weighted round robin "current weight" per backend.
    current: Vec<i64>,
    /// Rotates ties for least connections.
    cursor: usize,
}

/// The backends that serve now, full or not: the up primaries with weight (not
/// `excluded`), or the backups when no primary can. A primary at its maxConnections
/// keeps its tier: requests wait for it rather than spill onto backups (HAProxy too).
pub fn tier(candidates: &[Candidate], excluded: &[bool]) -> Vec<usize> {
    let usable = |i: usize, c: &Candidate, backup: bool| {
        c.backup == backup && c.up && c.weight > 0 && !excluded.get(i).copied().unwrap_or(false)
    };
    let of = |backup: bool| -> Vec<usize> {
        candidates
            .iter()
            .enumerate()
            .filter(|(i, c)| usable(*i, c, backup))
            .map(|(i, _)| i)
            .collect()
    };
    let primaries = of(false);
    if primaries.is_empty() {
        of(true)
    } else {
        primaries
    }
}

/// Chooses a backend index, or None when nothing can take traffic (see `tier`; a
/// full backend takes nothing). `excluded` marks backends already tried for this
/// request (retries go elsewhere).
pub fn pick(
    algorithm: Algorithm,
    state: &mut BalanceState,
    candidates: &[Candidate],
    excluded: &[bool],
    input: PickInput,
) -> Option<usize> {
    let eligible: Vec<usize> = tier(candidates, excluded)
        .into_iter()
        .filter(|&i| !candidates[i].full)
        .collect();
    if eligible.is_empty() {
        return None;
    }
    match algorithm {
        Algorithm::RoundRobin => Some(smooth_weighted(state, candidates, &eligible)),
        Algorithm::LeastConnections => Some(least_loaded(state, candidates, &eligible)),
        Algorithm::SourceHash => Some(rendezvous(candidates, &eligible, input.source_hash)),
        Algorithm::Random2 => {
            let a = eligible[(input.random.0 % eligible.len() as u64) as usize];
            let b = eligible[(input.random.1 % eligible.len() as u64) as usize];
            Some(if lighter(&candidates[b], &candidates[a]) {
                b
            } else {
                a
            })
        }
    }
}

/// Where a persistent request must go, full or not: the backend its cookie names
/// (`cookie`) while that one is up and not draining (weight 0) nor excluded, else, for
/// source-address affinity, the client's rendezvous choice among the serving tier.
/// None: balance normally.
pub fn pinned(
    candidates: &[Candidate],
    excluded: &[bool],
    cookie: Option<usize>,
    source: Option<u64>,
) -> Option<usize> {
    let serving = |i: usize| {
        candidates
            .get(i)
            .is_some_and(|c| c.up && c.weight > 0 && !excluded.get(i).copied().unwrap_or(false))
    };
    if let Some(i) = cookie.filter(|&i| serving(i)) {
        return Some(i);
    }
    let hash = source?;
    let tier = tier(candidates, excluded);
    (!tier.is_empty()).then(|| rendezvous(candidates, &tier, hash))
}

/// nginx-style smooth weighted round robin: spreads a heavy backend's turns out evenly.
fn smooth_weighted(
    state: &mut BalanceState,
    candidates: &[Candidate],
    eligible: &[usize],
) -> usize {
    state.current.resize(candidates.len(), 0);
    let mut total = 0i64;
    let mut best = eligible[0];
    for &i in eligible {
        let w = i64::from(candidates[i].weight);
        state.current[i] += w;
        total += w;
        if state.current[i] > state.current[best] {
            best = i;
        }
    }
    state.current[best] -= total;
    best
}

/// a carries less load per unit of weight than b.
fn lighter(a: &Candidate, b: &Candidate) -> bool {
    u64::from(a.active) * u64::from(b.weight) < u64::from(b.active) * u64::from(a.weight)
}

fn least_loaded(state: &mut BalanceState, candidates: &[Candidate], eligible: &[usize]) -> usize {
    let start = state.cursor % eligible.len();
    state.cursor = state.cursor.wrapping_add(1);
    let mut best = eligible[start];
    for k in 1..eligible.len() {
        let i = eligible[(start + k) % eligible.len()];
        if lighter(&candidates[i], &candidates[best]) {
            best = i;
        }
    }
    best
}

/// Weighted rendezvous hashing: a client keeps its backend while that backend is up, and
/// only the clients of a backend that leaves move.
fn rendezvous(candidates: &[Candidate], eligible: &[usize], source_hash: u64) -> usize {
    let mut best = eligible[0];
    let mut best_score = f64::NEG_INFINITY;
    for &i in eligible {
        let h = mix64(source_hash ^ mix64(candidates[i].id));
        // Uniform in (0, 1): never 0, so ln is finite.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -f64::from(candidates[i].weight) / u.ln();
        if score > best_score {
            best_score = score;
            best = i;
        }
    }
    best
}

/// SplitMix64 finaliser: a cheap, well-distributed 64-bit mix.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Stable 64-bit hash of a byte string (FNV-1a then mixed).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: u64, weight: u32) -> Candidate {
        Candidate {
            id,
            weight,
            backup: false,
            up: true,
            active: 0,
            full: false,
        }
    }

    fn counts(
        alg: Algorithm,
        cands: &[Candidate],
        n: usize,
        mut input: impl FnMut(usize) -> PickInput,
    ) -> Vec<usize> {
        let mut state = BalanceState::default();
        let mut out = vec![0; cands.len()];
        let none = vec![false; cands.len()];
        for k in 0..n {
            if let Some(i) = pick(alg, &mut state, cands, &none, input(k)) {
                out[i] += 1;
            }
        }
        out
    }

    #[test]
    fn round_robin_follows_weights_exactly_and_interleaves() {
        let cands = [backend(1, 3), backend(2, 1), backend(3, 2)];
        assert_eq!(
            counts(Algorithm::RoundRobin, &cands, 600, |_| PickInput::default()),
            vec![300, 100, 200]
        );
        // Smooth: the weight-3 backend never gets more than two turns in a row here.
        let mut state = BalanceState::default();
        let seq: Vec<usize> = (0..6)
            .filter_map(|_| {
                pick(
                    Algorithm::RoundRobin,
                    &mut state,
                    &cands,
                    &[false; 3],
                    PickInput::default(),
                )
            })
            .collect();
        assert_eq!(seq, vec![0, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn equal_weights_alternate() {
        let cands = [backend(1, 1), backend(2, 1)];
        let mut state = BalanceState::default();
        let seq: Vec<usize> = (0..4)
            .filter_map(|_| {
                pick(
                    Algorithm::RoundRobin,
                    &mut state,
                    &cands,
                    &[false; 2],
                    PickInput::default(),
                )
            })
            .collect();
        assert_eq!(seq, vec![0, 1, 0, 1]);
    }

    #[test]
    fn down_zero_weight_and_full_backends_get_nothing() {
        let mut cands = [backend(1, 1), backend(2, 0), backend(3, 1), backend(4, 1)];
        cands[2].up = false;
        cands[3].full = true;
        for alg in [
            Algorithm::RoundRobin,
            Algorithm::LeastConnections,
            Algorithm::SourceHash,
            Algorithm::Random2,
        ] {
            let c = counts(alg, &cands, 100, |k| PickInput {
                source_hash: mix64(k as u64),
                random: (k as u64, k as u64 * 7 + 1),
            });
            assert_eq!(c, vec![100, 0, 0, 0], "{alg:?}");
        }
    }

    #[test]
    fn backups_serve_only_when_no_primary_is_up() {
        let mut cands = [
            backend(1, 1),
            Candidate {
                backup: true,
                ..backend(2, 1)
            },
            Candidate {
                backup: true,
                ..backend(3, 1)
            },
        ];
        assert_eq!(
            counts(Algorithm::RoundRobin, &cands, 10, |_| PickInput::default()),
            vec![10, 0, 0]
        );
        cands[0].up = false;
        assert_eq!(
            counts(Algorithm::RoundRobin, &cands, 10, |_| PickInput::default()),
            vec![0, 5, 5]
        );
        cands[1].up = false;
        cands[2].up = false;
        assert_eq!(
            counts(Algorithm::RoundRobin, &cands, 10, |_| PickInput::default()),
            vec![0, 0, 0]
        );
    }

    #[test]
    fn retries_skip_excluded_backends() {
        let cands = [backend(1, 1), backend(2, 1)];
        let mut state = BalanceState::default();
        for _ in 0..5 {
            assert_eq!(
                pick(
                    Algorithm::RoundRobin,
                    &mut state,
                    &cands,
                    &[true, false],
                    PickInput::default()
                ),
                Some(1)
            );
        }
        assert_eq!(
            pick(
                Algorithm::RoundRobin,
                &mut state,
                &cands,
                &[true, true],
                PickInput::default()
            ),
            None
        );
    }

    #[test]
    fn least_connections_prefers_least_load_per_weight() {
        let mut cands = [backend(1, 1), backend(2, 2), backend(3, 1)];
        cands[0].active = 3;
        cands[1].active = 4; // 2 per unit of weight
        cands[2].active = 1;
        let mut state = BalanceState::default();
        assert_eq!(
            pick(
                Algorithm::LeastConnections,
                &mut state,
                &cands,
                &[false; 3],
                PickInput::default()
            ),
            Some(2)
        );
        cands[2].active = 5;
        assert_eq!(
            pick(
                Algorithm::LeastConnections,
                &mut state,
                &cands,
                &[false; 3],
                PickInput::default()
            ),
            Some(1)
        );
        // Ties rotate instead of piling onto the first backend.
        let tied = [backend(1, 1), backend(2, 1), backend(3, 1)];
        assert_eq!(
            counts(Algorithm::LeastConnections, &tied, 9, |_| {
                PickInput::default()
            }),
            vec![3, 3, 3]
        );
    }

    #[test]
    fn source_hash_is_stable_and_moves_only_the_lost_backends_clients() {
        let cands = [
            backend(11, 1),
            backend(22, 1),
            backend(33, 1),
            backend(44, 1),
        ];
        let mut state = BalanceState::default();
        let none = [false; 4];
        let before: Vec<usize> = (0..2000u64)
            .map(|c| {
                pick(
                    Algorithm::SourceHash,
                    &mut state,
                    &cands,
                    &none,
                    PickInput {
                        source_hash: mix64(c),
                        random: (0, 0),
                    },
                )
                .unwrap_or(99)
            })
            .collect();
        let again: Vec<usize> = (0..2000u64)
            .map(|c| {
                pick(
                    Algorithm::SourceHash,
                    &mut state,
                    &cands,
                    &none,
                    PickInput {
                        source_hash: mix64(c),
                        random: (0, 0),
                    },
                )
                .unwrap_or(99)
            })
            .collect();
        assert_eq!(before, again);
        let share = before.iter().filter(|&&i| i == 0).count();
        assert!((350..650).contains(&share), "uneven spread: {share}/2000");

        let mut down = cands;
        down[2].up = false;
        for (c, &was) in before.iter().enumerate() {
            let now = pick(
                Algorithm::SourceHash,
                &mut state,
                &down,
                &none,
                PickInput {
                    source_hash: mix64(c as u64),
                    random: (0, 0),
                },
            )
            .unwrap_or(99);
            if was != 2 {
                assert_eq!(now, was, "client {c} moved although its backend stayed up");
            } else {
                assert_ne!(now, 2);
            }
        }
    }

    #[test]
    fn source_hash_respects_weights() {
        let cands = [backend(1, 1), backend(2, 3)];
        let c = counts(Algorithm::SourceHash, &cands, 8000, |k| PickInput {
            source_hash: mix64(k as u64 + 1_000_000),
            random: (0, 0),
        });
        let heavy = c[1] as f64 / 8000.0;
        assert!((0.70..0.80).contains(&heavy), "weight-3 share {heavy}");
    }

    #[test]
    fn full_primaries_keep_their_tier() {
        let mut cands = [
            backend(1, 1),
            Candidate {
                backup: true,
                ..backend(2, 1)
            },
        ];
        cands[0].full = true;
        let none = [false; 2];
        assert_eq!(tier(&cands, &none), vec![0]);
        assert_eq!(
            pick(
                Algorithm::RoundRobin,
                &mut BalanceState::default(),
                &cands,
                &none,
                PickInput::default()
            ),
            None
        );
        cands[0].up = false;
        assert_eq!(tier(&cands, &none), vec![1]);
        assert_eq!(tier(&cands, &[false, true]), Vec::<usize>::new());
    }

    #[test]
    fn pins_follow_the_cookie_then_the_source_address() {
        let mut cands = [backend(11, 16), backend(22, 16), backend(33, 16)];
        cands[1].full = true;
        let none = [false; 3];
        /// Cookie, source hash, excluded, want.
        type Case = (Option<usize>, Option<u64>, [bool; 3], Option<usize>);
        let cases: [Case; 5] = [
            (Some(1), None, none, Some(1)),
            (Some(9), None, none, None),
            (None, None, none, None),
            (Some(1), None, [false, true, false], None),
            (Some(2), Some(5), none, Some(2)),
        ];
        for (cookie, source, excluded, want) in cases {
            assert_eq!(
                pinned(&cands, &excluded, cookie, source),
                want,
                "{cookie:?} {source:?}"
            );
        }
        // A draining (weight 0) or down backend keeps no pin.
        let mut drained = cands;
        drained[1].weight = 0;
        drained[2].up = false;
        assert_eq!(pinned(&drained, &none, Some(1), None), None);
        assert_eq!(pinned(&drained, &none, Some(2), None), None);
        // Source affinity: stable, full backends included, moves only off a down one.
        for c in 0..200u64 {
            let h = mix64(c);
            let first = pinned(&cands, &none, None, Some(h));
            assert_eq!(first, pinned(&cands, &none, None, Some(h)));
            let mut down = cands;
            if let Some(i) = first {
                down[i].up = false;
                let moved = pinned(&down, &none, None, Some(h));
                assert!(moved.is_some() && moved != first, "client {c}");
            }
        }
        let all_down = cands.map(|c| Candidate { up: false, ..c });
        assert_eq!(pinned(&all_down, &none, None, Some(1)), None);
    }

    #[test]
    fn random2_picks_the_lighter_of_two() {
        let mut cands = [backend(1, 1), backend(2, 1)];
        cands[0].active = 10;
        let mut state = BalanceState::default();
        assert_eq!(
            pick(
                Algorithm::Random2,
                &mut state,
                &cands,
                &[false; 2],
                PickInput {
                    source_hash: 0,
                    random: (0, 1)
                }
            ),
            Some(1)
        );
        assert_eq!(
            pick(
                Algorithm::Random2,
                &mut state,
                &cands,
                &[false; 2],
                PickInput {
                    source_hash: 0,
                    random: (1, 0)
                }
            ),
            Some(1)
        );
        assert_eq!(
            pick(
                Algorithm::Random2,
                &mut state,
                &cands,
                &[false; 2],
                PickInput {
                    source_hash: 0,
                    random: (0, 0)
                }
            ),
            Some(0)
        );
    }
}
