//! Option negotiation with the RFC 1143 "Q method".
//!
//! # Why the Q method
//!
//! The naive rule "answer every WILL with DO" loops forever when both ends keep re-announcing an
//! option (fuzzball #781 had a NAWS ping-pong). RFC 1143 keeps, per option and per side, one of
//! four states (`No`, `Yes`, `WantNo`, `WantYes`) plus a one-bit queue for a change of mind
//! requested while a negotiation is still in flight. With it we never answer a request that
//! would not change the state, so two correct ends always fall silent (tested by stepping two
//! endpoints that change their minds at random while bytes are in flight). A broken peer that
//! acknowledges even redundant requests and flips an option back and forth within one burst can
//! keep an exchange going, but every reply of ours answers one of its messages: it cannot make
//! us send more than it sends.
//!
//! # Sides
//!
//! * **local** ("us"): options *we* perform. We send WILL/WONT, the peer sends DO/DONT.
//! * **remote** ("him"): options the *peer* performs. We send DO/DONT, the peer sends WILL/WONT.
//!
//! # Cost
//!
//! A connection lives in tens of thousands of copies, so the state is one byte per *tracked*
//! option (both sides packed together) and a pointer to a shared, immutable [`Policy`]. Options
//! the policy does not list are always refused, and a refusal needs no state: in the `No` state
//! the answer to WILL/DO is DONT/WONT and WONT/DONT are ignored, which is all RFC 1143 asks.

use super::codec::Event;
use super::consts::{cmd, opt};

/// How many options a [`Policy`] may list; each one costs a byte per connection.
pub const MAX_TRACKED: usize = 8;

/// Whether we are willing to enable one option, on each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionPolicy {
    /// The option code, e.g. [`opt::NAWS`].
    pub opt: u8,
    /// We agree to perform it when asked (DO -> WILL) and may offer it with `request_local`.
    pub local: bool,
    /// We agree to let the peer perform it (WILL -> DO) and may ask with `request_remote`.
    pub remote: bool,
}

/// The table of options a connection negotiates; every option not listed is refused.
///
/// Build it once, in a `static`, with [`Policy::new`]; connections hold a `&'static Policy`.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Listed options; only the first `len` entries are meaningful.
    entries: [OptionPolicy; MAX_TRACKED],
    /// Number of meaningful entries.
    len: u8,
}

/// The policy ringtalk uses: we echo and suppress go-ahead (character mode for plain terminals),
/// can mark prompts with EOR and offer MSSP; we accept the client's window size, terminal type and
/// SGA.
pub static DEFAULT_POLICY: Policy = Policy::new(&[
    OptionPolicy {
        opt: opt::ECHO,
        local: true,
        remote: false,
    },
    OptionPolicy {
        opt: opt::SGA,
        local: true,
        remote: true,
    },
    OptionPolicy {
        opt: opt::EOR,
        local: true,
        remote: false,
    },
    OptionPolicy {
        opt: opt::TTYPE,
        local: false,
        remote: true,
    },
    OptionPolicy {
        opt: opt::NAWS,
        local: false,
        remote: true,
    },
    OptionPolicy {
        opt: opt::MSSP,
        local: true,
        remote: false,
    },
]);

impl Policy {
    /// Builds a policy from a list of options.
    ///
    /// A `remote` flag on [`opt::LINEMODE`] is cleared: we never send DO LINEMODE, because
    /// inetutils telnet then switches to its own local line editing.
    ///
    /// # Panics
    ///
    /// If `list` has more than [`MAX_TRACKED`] entries or names an option twice. Use it to
    /// initialise a `static` or `const`, where that panic is a compile error.
    pub const fn new(list: &[OptionPolicy]) -> Policy {
        assert!(
            list.len() <= MAX_TRACKED,
            "telnet Policy lists too many options"
        );
        let mut entries = [OptionPolicy {
            opt: 0,
            local: false,
            remote: false,
        }; MAX_TRACKED];
        let mut i = 0;
        while i < list.len() {
            let mut j = 0;
            while j < i {
                assert!(
                    list[j].opt != list[i].opt,
                    "telnet Policy lists an option twice"
                );
                j += 1;
            }
            entries[i] = list[i];
            if list[i].opt == opt::LINEMODE {
                entries[i].remote = false;
            }
            i += 1;
        }
        Policy {
            entries,
            len: list.len() as u8,
        }
    }

    /// The listed options.
    pub fn entries(&self) -> &[OptionPolicy] {
        &self.entries[..usize::from(self.len)]
    }

    /// Index of `opt` in the table, which is also its index in [`OptionStates`].
    fn slot(&self, opt: u8) -> Option<usize> {
        self.entries().iter().position(|e| e.opt == opt)
    }
}

/// Which end performs an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// We perform it (we send WILL/WONT).
    Local,
    /// The peer performs it (we send DO/DONT).
    Remote,
}

impl Side {
    /// Bit offset of this side's 3-bit Q state inside an option's state byte.
    fn shift(self) -> u8 {
        match self {
            Side::Local => 0,
            Side::Remote => 3,
        }
    }

    /// The verb we send to enable (`true`) or refuse/disable (`false`) this side of an option.
    fn verb(self, enable: bool) -> u8 {
        match (self, enable) {
            (Side::Local, true) => cmd::WILL,
            (Side::Local, false) => cmd::WONT,
            (Side::Remote, true) => cmd::DO,
            (Side::Remote, false) => cmd::DONT,
        }
    }
}

/// RFC 1143 state of one side of one option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Q {
    /// Disabled.
    No,
    /// Enabled.
    Yes,
    /// We asked to disable and wait for the answer.
    WantNo,
    /// We asked to enable and wait for the answer.
    WantYes,
}

/// A Q state plus its queue bit ("opposite": change our mind once the answer arrives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Qs {
    /// Where negotiation stands.
    state: Q,
    /// A request for the opposite state is queued behind the one in flight.
    opposite: bool,
}

/// Negotiation state of every tracked option, one byte each: bits 0-2 local, bits 3-5 remote
/// (two bits of [`Q`], one queue bit).
#[derive(Clone, Copy, Debug, Default)]
struct OptionStates([u8; MAX_TRACKED]);

impl OptionStates {
    fn get(&self, slot: usize, side: Side) -> Qs {
        let bits = self.0[slot] >> side.shift();
        let state = match bits & 0b11 {
            0 => Q::No,
            1 => Q::Yes,
            2 => Q::WantNo,
            _ => Q::WantYes,
        };
        Qs {
            state,
            opposite: bits & 0b100 != 0,
        }
    }

    fn set(&mut self, slot: usize, side: Side, qs: Qs) {
        let code = match qs.state {
            Q::No => 0,
            Q::Yes => 1,
            Q::WantNo => 2,
            Q::WantYes => 3,
        } | (u8::from(qs.opposite) << 2);
        let shift = side.shift();
        self.0[slot] = (self.0[slot] & !(0b111 << shift)) | (code << shift);
    }
}

/// Appends `IAC <verb> <opt>`.
fn send(out: &mut Vec<u8>, verb: u8, opt: u8) {
    out.extend_from_slice(&[cmd::IAC, verb, opt]);
}

/// Per-connection negotiation state: a shared policy and one byte per tracked option.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Negotiator {
    /// What we agree to; shared by all connections.
    policy: &'static Policy,
    /// Where each tracked option stands.
    states: OptionStates,
}

impl Negotiator {
    /// All options disabled on both sides, as at connect time.
    pub(crate) fn new(policy: &'static Policy) -> Self {
        Negotiator {
            policy,
            states: OptionStates::default(),
        }
    }

    /// Whether `opt` is fully enabled (state `Yes`) on `side`.
    ///
    /// An option we asked to disable counts as off at once (RFC 854 lets the sender of
    /// WONT/DONT stop immediately); one we asked to enable counts as off until the peer agrees.
    pub(crate) fn is_enabled(&self, side: Side, opt: u8) -> bool {
        self.policy
            .slot(opt)
            .is_some_and(|slot| self.states.get(slot, side).state == Q::Yes)
    }

    /// Treats an unanswered request to disable `opt` as answered: `WantNo` becomes `No` and any
    /// queued change of mind is dropped. Returns true if there was such a request.
    ///
    /// Disabling cannot be refused (RFC 854), yet many MUD clients never acknowledge a WONT ECHO;
    /// without this, the WILL ECHO of a later password prompt would wait behind that
    /// acknowledgement forever. A late acknowledgement then meets `No` (or `WantYes`, where RFC
    /// 1143 reads it as a refusal) and gets no reply, so no loop can start.
    pub(crate) fn settle_unanswered_disable(&mut self, side: Side, opt: u8) -> bool {
        let Some(slot) = self.policy.slot(opt) else {
            return false;
        };
        let mut q = self.states.get(slot, side);
        if q.state != Q::WantNo {
            return false;
        }
        q.state = Q::No;
        q.opposite = false;
        self.states.set(slot, side, q);
        true
    }

    /// Handles a received WILL/WONT (remote side) or DO/DONT (local side) for `opt`.
    ///
    /// `positive` is true for WILL and DO. Replies go to `out`; a change that settles the
    /// option (state becomes `Yes` or `No`) is reported in `events`.
    pub(crate) fn received(
        &mut self,
        side: Side,
        positive: bool,
        opt: u8,
        events: &mut Vec<Event>,
        out: &mut Vec<u8>,
    ) {
        let Some(slot) = self.policy.slot(opt) else {
            // Untracked: always in state No. Refuse an offer; ignore a refusal.
            if positive {
                send(out, side.verb(false), opt);
            }
            return;
        };
        let entry = self.policy.entries[slot];
        let accept = match side {
            Side::Local => entry.local,
            Side::Remote => entry.remote,
        };
        let before = self.states.get(slot, side);
        let mut q = before;
        match (positive, q.state, q.opposite) {
            (true, Q::No, _) => {
                if accept {
                    q.state = Q::Yes;
                }
                send(out, side.verb(accept), opt);
            }
            (true, Q::Yes, _) | (false, Q::No, _) => {} // redundant: answering would loop
            // The peer enabled what we asked it to disable: an error; RFC 1143 settles on the
            // request (or on the queued counter-request).
            (true, Q::WantNo, false) => q.state = Q::No,
            (true, Q::WantNo, true) => {
                q = Qs {
                    state: Q::Yes,
                    opposite: false,
                }
            }
            (true, Q::WantYes, false) => q.state = Q::Yes,
            (true, Q::WantYes, true) => {
                q = Qs {
                    state: Q::WantNo,
                    opposite: false,
                };
                send(out, side.verb(false), opt);
            }
            (false, Q::Yes, _) => {
                q.state = Q::No;
                send(out, side.verb(false), opt);
            }
            (false, Q::WantNo, false) => q.state = Q::No,
            (false, Q::WantNo, true) => {
                q = Qs {
                    state: Q::WantYes,
                    opposite: false,
                };
                send(out, side.verb(true), opt);
            }
            (false, Q::WantYes, _) => {
                q = Qs {
                    state: Q::No,
                    opposite: false,
                }
            }
        }
        self.states.set(slot, side, q);
        if q.state != before.state {
            let event = match (side, q.state) {
                (Side::Local, Q::Yes) => Event::LocalEnabled(opt),
                (Side::Local, Q::No) => Event::LocalDisabled(opt),
                (Side::Remote, Q::Yes) => Event::RemoteEnabled(opt),
                (Side::Remote, Q::No) => Event::RemoteDisabled(opt),
                _ => return, // still negotiating
            };
            events.push(event);
        }
    }

    /// Asks to enable or disable `opt` on `side`; see `Telnet::request_local`.
    pub(crate) fn request(&mut self, side: Side, opt: u8, enable: bool, out: &mut Vec<u8>) -> bool {
        let Some(slot) = self.policy.slot(opt) else {
            return !enable; // untracked options are always off
        };
        let entry = self.policy.entries[slot];
        let allowed = match side {
            Side::Local => entry.local,
            Side::Remote => entry.remote,
        };
        if enable && !allowed {
            return false;
        }
        let mut q = self.states.get(slot, side);
        match (enable, q.state, q.opposite) {
            (true, Q::No, _) => {
                q.state = Q::WantYes;
                send(out, side.verb(true), opt);
            }
            (false, Q::Yes, _) => {
                q.state = Q::WantNo;
                send(out, side.verb(false), opt);
            }
            // A change of mind while a negotiation is in flight is queued behind it ...
            (true, Q::WantNo, _) | (false, Q::WantYes, _) => q.opposite = true,
            // ... and wanting what is already on the way cancels such a queued change.
            (true, Q::WantYes, _) | (false, Q::WantNo, _) => q.opposite = false,
            // Already there: nothing to say.
            (true, Q::Yes, _) | (false, Q::No, _) => {}
        }
        self.states.set(slot, side, q);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{Event, Telnet};
    use super::super::testutil::unescape;
    use super::*;

    /// Feeds `input` (in `%XX` notation); returns the events and replies it produced.
    fn recv(t: &mut Telnet, input: &str) -> (Vec<Event>, Vec<u8>) {
        let (mut events, mut out) = (Vec::new(), Vec::new());
        t.receive(&unescape(input), &mut events, &mut out);
        (events, out)
    }

    fn local(t: &mut Telnet, opt: u8, on: bool) -> (bool, Vec<u8>) {
        let mut out = Vec::new();
        (t.request_local(opt, on, &mut out), out)
    }

    fn remote(t: &mut Telnet, opt: u8, on: bool) -> (bool, Vec<u8>) {
        let mut out = Vec::new();
        (t.request_remote(opt, on, &mut out), out)
    }

    const NOTHING: (Vec<Event>, Vec<u8>) = (Vec::new(), Vec::new());

    #[test]
    fn password_echo_cycle() {
        let mut t = Telnet::new();
        assert_eq!(
            local(&mut t, opt::ECHO, true),
            (true, unescape("%FF%FB%01"))
        );
        assert_eq!(
            local(&mut t, opt::ECHO, true),
            (true, vec![]),
            "WILL sent once"
        );
        assert!(
            !t.is_local_enabled(opt::ECHO),
            "not on before the client agrees"
        );
        assert_eq!(
            recv(&mut t, "%FF%FD%01"),
            (vec![Event::LocalEnabled(opt::ECHO)], vec![])
        );
        assert!(t.is_local_enabled(opt::ECHO));
        assert_eq!(local(&mut t, opt::ECHO, true), (true, vec![]), "already on");
        assert_eq!(
            local(&mut t, opt::ECHO, false),
            (true, unescape("%FF%FC%01"))
        );
        assert!(
            !t.is_local_enabled(opt::ECHO),
            "off as soon as we send WONT"
        );
        assert_eq!(
            local(&mut t, opt::ECHO, false),
            (true, vec![]),
            "WONT sent once"
        );
        assert_eq!(
            recv(&mut t, "%FF%FE%01"),
            (vec![Event::LocalDisabled(opt::ECHO)], vec![])
        );
        assert_eq!(recv(&mut t, "%FF%FE%01"), NOTHING, "redundant DONT ignored");
    }

    #[test]
    fn client_refusing_our_will_ends_in_no_without_loop() {
        let mut t = Telnet::new();
        assert_eq!(local(&mut t, opt::ECHO, true).1, unescape("%FF%FB%01"));
        assert_eq!(
            recv(&mut t, "%FF%FE%01"),
            (vec![Event::LocalDisabled(opt::ECHO)], vec![])
        );
        assert!(!t.is_local_enabled(opt::ECHO));
        assert_eq!(recv(&mut t, "%FF%FE%01%FF%FE%01"), NOTHING);
    }

    #[test]
    fn client_refusing_our_do_ends_in_no_without_loop() {
        let mut t = Telnet::new();
        assert_eq!(remote(&mut t, opt::TTYPE, true).1, unescape("%FF%FD%18"));
        assert_eq!(
            recv(&mut t, "%FF%FC%18"),
            (vec![Event::RemoteDisabled(opt::TTYPE)], vec![])
        );
        assert_eq!(recv(&mut t, "%FF%FC%18"), NOTHING);
        assert!(!t.is_remote_enabled(opt::TTYPE));
    }

    #[test]
    fn client_agreeing_to_ttype() {
        let mut t = Telnet::new();
        assert_eq!(remote(&mut t, opt::TTYPE, true).1, unescape("%FF%FD%18"));
        assert_eq!(
            recv(&mut t, "%FF%FB%18"),
            (vec![Event::RemoteEnabled(opt::TTYPE)], vec![])
        );
        assert!(t.is_remote_enabled(opt::TTYPE));
        assert_eq!(recv(&mut t, "%FF%FB%18"), NOTHING);
    }

    #[test]
    fn change_of_mind_while_asking_to_enable_is_queued() {
        let mut t = Telnet::new();
        assert_eq!(local(&mut t, opt::ECHO, true).1, unescape("%FF%FB%01"));
        assert_eq!(
            local(&mut t, opt::ECHO, false),
            (true, vec![]),
            "queued, not sent"
        );
        // The client agrees; we immediately take it back, as queued.
        assert_eq!(recv(&mut t, "%FF%FD%01"), (vec![], unescape("%FF%FC%01")));
        assert!(!t.is_local_enabled(opt::ECHO));
        assert_eq!(
            recv(&mut t, "%FF%FE%01"),
            (vec![Event::LocalDisabled(opt::ECHO)], vec![])
        );
    }

    #[test]
    fn change_of_mind_while_asking_to_disable_is_queued() {
        let mut t = Telnet::new();
        recv(&mut t, "%FF%FB%1F");
        assert_eq!(remote(&mut t, opt::NAWS, false).1, unescape("%FF%FE%1F"));
        assert_eq!(remote(&mut t, opt::NAWS, true), (true, vec![]), "queued");
        assert_eq!(recv(&mut t, "%FF%FC%1F"), (vec![], unescape("%FF%FD%1F")));
        assert_eq!(
            recv(&mut t, "%FF%FB%1F"),
            (vec![Event::RemoteEnabled(opt::NAWS)], vec![])
        );
        assert!(t.is_remote_enabled(opt::NAWS));
    }

    #[test]
    fn queued_change_can_be_cancelled() {
        let mut t = Telnet::new();
        local(&mut t, opt::SGA, true);
        local(&mut t, opt::SGA, false);
        assert_eq!(local(&mut t, opt::SGA, true), (true, vec![]), "unqueued");
        assert_eq!(
            recv(&mut t, "%FF%FD%03"),
            (vec![Event::LocalEnabled(opt::SGA)], vec![])
        );
    }

    #[test]
    fn peer_enabling_what_we_disable_is_an_error_settled_as_no() {
        let mut t = Telnet::new();
        recv(&mut t, "%FF%FB%1F");
        remote(&mut t, opt::NAWS, false);
        // RFC 1143: WILL in answer to DONT is an error; we stay off and say nothing.
        assert_eq!(
            recv(&mut t, "%FF%FB%1F"),
            (vec![Event::RemoteDisabled(opt::NAWS)], vec![])
        );
        assert!(!t.is_remote_enabled(opt::NAWS));
    }

    #[test]
    fn requests_outside_the_policy_are_refused() {
        let mut t = Telnet::new();
        assert_eq!(remote(&mut t, opt::LINEMODE, true), (false, vec![]));
        assert_eq!(
            local(&mut t, opt::TTYPE, true),
            (false, vec![]),
            "we have no terminal"
        );
        assert_eq!(remote(&mut t, opt::ECHO, true), (false, vec![]));
        assert_eq!(local(&mut t, 99, true), (false, vec![]));
        assert_eq!(
            local(&mut t, 99, false),
            (true, vec![]),
            "untracked is always off"
        );
        assert!(!t.is_local_enabled(99) && !t.is_remote_enabled(99));
    }

    static LINEMODE_POLICY: Policy = Policy::new(&[
        OptionPolicy {
            opt: opt::LINEMODE,
            local: true,
            remote: true,
        },
        OptionPolicy {
            opt: 100,
            local: true,
            remote: true,
        },
        OptionPolicy {
            opt: 101,
            local: true,
            remote: true,
        },
        OptionPolicy {
            opt: 102,
            local: true,
            remote: true,
        },
        OptionPolicy {
            opt: 103,
            local: true,
            remote: true,
        },
        OptionPolicy {
            opt: 104,
            local: true,
            remote: true,
        },
        OptionPolicy {
            opt: 105,
            local: true,
            remote: true,
        },
        OptionPolicy {
            opt: 106,
            local: true,
            remote: true,
        },
    ]);

    #[test]
    fn linemode_is_refused_even_if_a_policy_allows_it() {
        let mut t = Telnet::with_policy(&LINEMODE_POLICY);
        assert_eq!(remote(&mut t, opt::LINEMODE, true), (false, vec![]));
        assert_eq!(recv(&mut t, "%FF%FB%22"), (vec![], unescape("%FF%FE%22")));
        // The local side of LINEMODE is allowed by this policy, and so are all eight slots.
        assert_eq!(
            recv(&mut t, "%FF%FD%22").0,
            [Event::LocalEnabled(opt::LINEMODE)]
        );
        assert_eq!(recv(&mut t, "%FF%FB%6A").0, [Event::RemoteEnabled(106)]);
        assert_eq!(LINEMODE_POLICY.entries().len(), MAX_TRACKED);
    }

    #[test]
    fn packed_states_do_not_interfere() {
        let mut s = OptionStates::default();
        let all = [Q::No, Q::Yes, Q::WantNo, Q::WantYes];
        for (i, &a) in all.iter().enumerate() {
            for (j, &b) in all.iter().enumerate() {
                let qa = Qs {
                    state: a,
                    opposite: i % 2 == 0,
                };
                let qb = Qs {
                    state: b,
                    opposite: j % 2 == 1,
                };
                s.set(3, Side::Local, qa);
                s.set(3, Side::Remote, qb);
                assert_eq!((s.get(3, Side::Local), s.get(3, Side::Remote)), (qa, qb));
                assert_eq!(s.get(2, Side::Local).state, Q::No);
            }
        }
    }

    /// What a client would accept: the mirror image of [`DEFAULT_POLICY`] plus LINEMODE.
    static CLIENT_POLICY: Policy = Policy::new(&[
        OptionPolicy {
            opt: opt::ECHO,
            local: false,
            remote: true,
        },
        OptionPolicy {
            opt: opt::SGA,
            local: true,
            remote: true,
        },
        OptionPolicy {
            opt: opt::EOR,
            local: false,
            remote: true,
        },
        OptionPolicy {
            opt: opt::TTYPE,
            local: true,
            remote: false,
        },
        OptionPolicy {
            opt: opt::NAWS,
            local: true,
            remote: false,
        },
        OptionPolicy {
            opt: opt::LINEMODE,
            local: true,
            remote: false,
        },
    ]);

    #[test]
    fn two_endpoints_always_fall_silent_and_agree() {
        // Two endpoints change their minds at random while bytes are in flight, delivered in
        // random pieces. Once they stop asking, the exchange must end within a few round
        // trips, and both must agree on every option (and agree with their own events).
        const OPTS: [u8; 7] = [opt::ECHO, opt::SGA, opt::EOR, opt::TTYPE, opt::NAWS, 34, 99];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2000 {
            let mut ends = [Telnet::new(), Telnet::with_policy(&CLIENT_POLICY)];
            let mut wires: [Vec<u8>; 2] = [Vec::new(), Vec::new()]; // wires[i]: bytes to end i
            let mut seen: [std::collections::HashMap<(bool, u8), bool>; 2] = Default::default();
            let mut deliver = |ends: &mut [Telnet; 2], wires: &mut [Vec<u8>; 2], to: usize, n| {
                let bytes: Vec<u8> = wires[to].drain(..n).collect();
                let (mut events, mut out) = (Vec::new(), Vec::new());
                ends[to].receive(&bytes, &mut events, &mut out);
                wires[1 - to].extend(out);
                for e in events {
                    let (key, on) = match e {
                        Event::LocalEnabled(o) => ((true, o), true),
                        Event::LocalDisabled(o) => ((true, o), false),
                        Event::RemoteEnabled(o) => ((false, o), true),
                        Event::RemoteDisabled(o) => ((false, o), false),
                        other => panic!("unexpected {other:?}"),
                    };
                    seen[to].insert(key, on);
                }
            };
            for _ in 0..rand(30) {
                let who = rand(2) as usize;
                let opt = OPTS[rand(OPTS.len() as u64) as usize];
                let on = rand(2) == 0;
                let mut out = Vec::new();
                if rand(2) == 0 {
                    ends[who].request_local(opt, on, &mut out);
                } else {
                    ends[who].request_remote(opt, on, &mut out);
                }
                wires[1 - who].extend(out);
                let to = rand(2) as usize;
                let n = rand(wires[to].len() as u64 + 1) as usize;
                deliver(&mut ends, &mut wires, to, n);
            }
            let mut rounds = 0;
            while !(wires[0].is_empty() && wires[1].is_empty()) {
                rounds += 1;
                assert!(rounds <= 8, "negotiation loop");
                for to in 0..2 {
                    let n = wires[to].len();
                    deliver(&mut ends, &mut wires, to, n);
                }
            }
            for &o in &OPTS {
                assert_eq!(
                    ends[0].is_local_enabled(o),
                    ends[1].is_remote_enabled(o),
                    "opt {o}"
                );
                assert_eq!(
                    ends[0].is_remote_enabled(o),
                    ends[1].is_local_enabled(o),
                    "opt {o}"
                );
                assert!(!ends[0].is_remote_enabled(34), "LINEMODE enabled");
                for (i, end) in ends.iter().enumerate() {
                    let on = [end.is_local_enabled(o), end.is_remote_enabled(o)];
                    for (k, local) in [true, false].into_iter().enumerate() {
                        let last = seen[i].get(&(local, o)).copied().unwrap_or(false);
                        assert_eq!(
                            last, on[k],
                            "end {i} local={local} opt {o}: events disagree"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn redundant_announcements_never_get_a_reply() {
        // Once settled, a peer re-announcing the state of any option (fuzzball #781's NAWS
        // ping-pong started this way) must hear nothing back, for all 256 options.
        let mut t = Telnet::new();
        recv(
            &mut t,
            "%FF%FB%1F%FF%FB%18%FF%FD%01%FF%FD%03%FF%FB%03%FF%FD%22%FF%FB%22",
        );
        let mut again = Vec::new();
        for o in 0..=255u8 {
            let remote = if t.is_remote_enabled(o) {
                cmd::WILL
            } else {
                cmd::WONT
            };
            let local = if t.is_local_enabled(o) {
                cmd::DO
            } else {
                cmd::DONT
            };
            again.extend_from_slice(&[cmd::IAC, remote, o, cmd::IAC, local, o]);
        }
        let (mut events, mut out) = (Vec::new(), Vec::new());
        t.receive(&again, &mut events, &mut out);
        t.receive(&again, &mut events, &mut out);
        assert_eq!((events, out), NOTHING);
        assert!(t.is_remote_enabled(opt::NAWS) && t.is_local_enabled(opt::ECHO));
        assert!(!t.is_remote_enabled(opt::LINEMODE) && !t.is_local_enabled(opt::LINEMODE));
    }
}
