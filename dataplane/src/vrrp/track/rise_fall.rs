//! The rise/fall rule of a periodic track check (pure): `fall` failures in a row make a
//! passing check fail, `rise` successes in a row make a failing one pass again.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CheckState {
    /// No result yet; counts as failing, so a node does not claim a VIP before its
    /// checks have passed once.
    Unknown,
    Passing,
    Failing,
}

/// A change of state, named by the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Passing,
    Failing,
}

#[derive(Clone, Debug)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    state: CheckState,
    /// Results in a row that disagree with `state`.
    streak: u32,
}

impl RiseFall {
    /// `rise` and `fall` below 1 count as 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state: CheckState::Unknown,
            streak: 0,
        }
    }

    pub fn state(&self) -> CheckState {
        self.state
    }

    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Whether tracking counts the check as failed now.
    pub fn failed(&self) -> bool {
        self.state != CheckState::Passing
    }

    /// Takes one result. The first one decides at once; later ones need `rise`/`fall`
    /// in a row.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        let (needed, next) = match (self.state, ok) {
            (CheckState::Unknown, _) => (1, ok),
            (CheckState::Passing, true) | (CheckState::Failing, false) => {
                self.streak = 0;
                return None;
            }
            (CheckState::Passing, false) => (self.fall, false),
            (CheckState::Failing, true) => (self.rise, true),
        };
        self.streak += 1;
        if self.streak < needed {
            return None;
        }
        self.streak = 0;
        if next {
            self.state = CheckState::Passing;
            Some(Transition::Passing)
        } else {
            self.state = CheckState::Failing;
            Some(Transition::Failing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (rise, fall, results, transitions expected after each result, final state)
    type Case<'a> = (u32, u32, &'a [bool], &'a [Option<Transition>], CheckState);

    #[test]
    fn table_of_rise_and_fall() {
        use CheckState::{Failing, Passing, Unknown};
        use Transition as T;
        let cases: &[Case<'_>] = &[
            (1, 1, &[], &[], Unknown),
            (3, 3, &[true], &[Some(T::Passing)], Passing),
            (3, 3, &[false], &[Some(T::Failing)], Failing),
            (
                1,
                2,
                &[true, false, true, false, false],
                &[Some(T::Passing), None, None, None, Some(T::Failing)],
                Failing,
            ),
            (
                3,
                1,
                &[false, true, true, false, true, true, true],
                &[
                    Some(T::Failing),
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(T::Passing),
                ],
                Passing,
            ),
            (
                1,
                1,
                &[true, false, true, true],
                &[Some(T::Passing), Some(T::Failing), Some(T::Passing), None],
                Passing,
            ),
            // 0 counts as 1.
            (
                0,
                0,
                &[true, false],
                &[Some(T::Passing), Some(T::Failing)],
                Failing,
            ),
        ];
        for (rise, fall, results, want, end) in cases {
            let mut rf = RiseFall::new(*rise, *fall);
            let got: Vec<Option<T>> = results.iter().map(|ok| rf.observe(*ok)).collect();
            assert_eq!(&got, want, "rise {rise} fall {fall} {results:?}");
            assert_eq!(rf.state(), *end, "rise {rise} fall {fall} {results:?}");
            assert_eq!(rf.failed(), *end != Passing);
        }
    }

    #[test]
    fn streak_counts_results_against_the_state() {
        let mut rf = RiseFall::new(3, 3);
        rf.observe(true);
        rf.observe(false);
        rf.observe(false);
        assert_eq!((rf.state(), rf.streak()), (CheckState::Passing, 2));
        rf.observe(true);
        assert_eq!(rf.streak(), 0, "a success in between starts over");
    }
}
