//! Kleene's three-valued logic, in which the reference interpreter evaluates conditions.

use bundle::verdict::Decision;

/// A condition's value in Kleene's three-valued logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum T3 {
    /// Does not hold.
    False,
    /// Holds.
    True,
    /// A type error decides it: the test does not apply to the value's type.
    Unknown,
}

impl From<bool> for T3 {
    fn from(b: bool) -> Self {
        if b { T3::True } else { T3::False }
    }
}

impl T3 {
    pub(super) fn and(self, other: impl FnOnce() -> T3) -> T3 {
        match self {
            T3::False => T3::False,
            T3::True => other(),
            T3::Unknown => match other() {
                T3::False => T3::False,
                _ => T3::Unknown,
            },
        }
    }

    pub(super) fn or(self, other: impl FnOnce() -> T3) -> T3 {
        match self {
            T3::True => T3::True,
            T3::False => other(),
            T3::Unknown => match other() {
                T3::True => T3::True,
                _ => T3::Unknown,
            },
        }
    }

    pub(super) fn not(self) -> T3 {
        match self {
            T3::True => T3::False,
            T3::False => T3::True,
            T3::Unknown => T3::Unknown,
        }
    }

    /// Whether a match with this decision happens: unknown matches a decision stricter than
    /// ALLOW, never an ALLOW.
    pub(super) fn matches(self, decision: Decision) -> bool {
        match self {
            T3::True => true,
            T3::False => false,
            T3::Unknown => decision > Decision::Allow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::T3::{self, False as F, True as T, Unknown as U};
    use bundle::verdict::Decision;

    #[test]
    fn kleene_tables() {
        let all = [F, T, U];
        for a in all {
            for b in all {
                let and = match (a, b) {
                    (F, _) | (_, F) => F,
                    (T, T) => T,
                    _ => U,
                };
                let or = match (a, b) {
                    (T, _) | (_, T) => T,
                    (F, F) => F,
                    _ => U,
                };
                assert_eq!(a.and(|| b), and, "{a:?} and {b:?}");
                assert_eq!(a.or(|| b), or, "{a:?} or {b:?}");
            }
        }
        assert_eq!([F.not(), T.not(), U.not()], [T, F, U]);
    }

    #[test]
    fn unknown_matches_only_what_is_stricter_than_allow() {
        assert!(!U.matches(Decision::Allow));
        for d in [
            Decision::Modify,
            Decision::Defer,
            Decision::StepUp,
            Decision::Deny,
        ] {
            assert!(U.matches(d));
            assert!(T.matches(d) && !F.matches(d));
        }
        assert!(T.matches(Decision::Allow) && !T3::False.matches(Decision::Allow));
    }
}
