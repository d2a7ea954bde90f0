//! Defences against one client holding everyone up: per-address limits on connections, connects,
//! failed logins and sign-ups, and per-session flood control. On by default, with loopback exempt
//! so that load tests and connection storms from this machine still work.
//!
//! Every shard accepts connections, and one address's connections land on all of them, so the
//! per-address counts are shared by every shard (and by nothing else). They live in one fixed
//! table of atomics, indexed by a keyed hash of the address (see [`address::limit_key`]): a check
//! is a hash and a compare-and-swap, never a lock, never a wait, and the table's size does not grow
//! with the number of addresses seen. Two addresses that share a slot share its limits; the hash
//! key is drawn at random at start, so no one can choose whom they share with, and with 65,536
//! slots a given address shares with a given other one once in 65,536 starts.
//!
//! What a connection holds in that table (its place in the counts) is a [`Ticket`], which gives it
//! back when dropped, however the connection ends, and travels with a session that moves shards.
//!
//! Failed logins are counted twice: per address, where after a few failures further attempts are
//! refused (with no bcrypt work) for a wait that grows; and per account, where failures from any
//! address slow that account's logins by a few seconds at most, so that many addresses guessing one
//! password are slowed without a stranger being able to lock its owner out.

pub mod address;
pub mod flood;
pub mod rate;

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use address::Cidr;
use arc_swap::ArcSwap;
use flood::FloodLimits;
use rate::{Backoff, Rate};

use crate::config::Config;

/// Slots in the per-address table (a power of two). 40 bytes each, allocated zeroed, so only the
/// pages of slots in use take memory.
const ADDRESS_SLOTS: usize = 1 << 16;

/// Slots in the per-account table of failed logins (a power of two), 8 bytes each.
const ACCOUNT_SLOTS: usize = 1 << 14;

/// Failed logins from one address: 3 within a minute, then a wait of 30 s that doubles with each
/// further failure up to 15 minutes; forgotten after a success or a quiet hour.
pub const ADDRESS_BACKOFF: Backoff = Backoff {
    threshold: 3,
    window_s: 60,
    first_delay_s: 30,
    max_delay_s: 15 * 60,
    quiet_s: 60 * 60,
};

/// Failed logins against one account, from anywhere: after 5 within 5 minutes, each attempt on
/// the account waits 1 s, doubling with each further failure up to 16 s. Its owner is slowed, never
/// locked out. Forgotten after a success or a quiet quarter of an hour.
pub const ACCOUNT_BACKOFF: Backoff = Backoff {
    threshold: 5,
    window_s: 5 * 60,
    first_delay_s: 1,
    max_delay_s: 16,
    quiet_s: 15 * 60,
};

/// A limit that was hit, as the stats and the log name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// A connection refused: its address had `--max-conns-per-ip` connections.
    ConnCap,
    /// A connection refused: its address had `--max-unauth-per-ip` connections not logged in.
    UnauthCap,
    /// A connection refused: its address connected more often than `--conn-rate`.
    ConnRate,
    /// A login attempt refused: too many failed logins from its address.
    LoginThrottle,
    /// A login attempt slowed: too many failed logins against its account.
    AccountSlowed,
    /// A sign-up refused: its address created accounts faster than `--signup-rate`.
    SignupRate,
    /// A line dropped by flood control.
    Flood,
}

impl Limit {
    /// Every kind, in the order of [`Limit::index`].
    pub const ALL: [Limit; 7] = [
        Limit::ConnCap,
        Limit::UnauthCap,
        Limit::ConnRate,
        Limit::LoginThrottle,
        Limit::AccountSlowed,
        Limit::SignupRate,
        Limit::Flood,
    ];

    /// Its place in per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its name in the stats and the log.
    pub fn name(self) -> &'static str {
        match self {
            Limit::ConnCap => "conn_cap",
            Limit::UnauthCap => "unauth_cap",
            Limit::ConnRate => "conn_rate",
            Limit::LoginThrottle => "login_throttle",
            Limit::AccountSlowed => "account_slowed",
            Limit::SignupRate => "signup_rate",
            Limit::Flood => "flood",
        }
    }
}

/// Why a connection was refused at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its address has the most connections allowed.
    TooMany,
    /// Its address has the most connections allowed that have not logged in.
    TooManyLoggingIn,
    /// Its address connected too often recently.
    TooFast,
}

impl Refusal {
    /// The one line the connection is sent before it is closed.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::TooMany => "Too many connections from your address.",
            Refusal::TooManyLoggingIn => {
                "Too many connections from your address are still logging in; try again later."
            }
            Refusal::TooFast => "Too many connections from your address recently; try again later.",
        }
    }

    /// The limit it counts under.
    pub fn limit(self) -> Limit {
        match self {
            Refusal::TooMany => Limit::ConnCap,
            Refusal::TooManyLoggingIn => Limit::UnauthCap,
            Refusal::TooFast => Limit::ConnRate,
        }
    }
}

/// What the defences say of a new connection.
#[derive(Debug)]
pub enum Admission {
    /// From an exempt address: no limit applies.
    Exempt,
    /// Let in, holding its place in its address's counts.
    Admitted(Ticket),
    /// Refused, and why.
    Refused(Refusal),
}

/// One slot of the per-address table.
#[derive(Debug, Default)]
struct Slot {
    /// Connections open now.
    conns: AtomicU32,
    /// Connections open now that have not logged in.
    unauth: AtomicU32,
    /// `--conn-rate` state (GCRA arrival time, ns since the table's start).
    connects: AtomicU64,
    /// `--signup-rate` state, likewise.
    signups: AtomicU64,
    /// Failed logins ([`ADDRESS_BACKOFF`] state).
    failures: AtomicU64,
    /// Passwords from this address being checked now: at most one (see [`Checking`]).
    checking: AtomicU32,
}

/// The settings of the defences, from the flags; replaced whole when the configuration is
/// reloaded (see [`Defences::set_policy`]).
#[derive(Debug)]
struct Policy {
    exempt: Vec<Cidr>,
    max_conns: u32,
    max_unauth: u32,
    conn_rate: Rate,
    signup_rate: Rate,
    flood: FloodLimits,
}

impl Policy {
    fn of(config: &Config) -> Policy {
        Policy {
            exempt: config.exempt.iter().filter_map(|e| e.0).collect(),
            max_conns: config.max_conns_per_ip,
            max_unauth: config.max_unauth_per_ip,
            conn_rate: config.conn_rate,
            signup_rate: config.signup_rate,
            flood: FloodLimits {
                burst: config.flood_burst,
                per_second: config.flood_rate,
                queue: config.flood_queue,
            },
        }
    }
}

/// The defences of one server: its settings and the shared counts.
pub struct Defences {
    /// Read on each connection, login, sign-up and limited line; swapped, never locked, so a
    /// reload holds up no shard.
    policy: ArcSwap<Policy>,
    addresses: Box<[Slot]>,
    accounts: Box<[AtomicU64]>,
    hasher: std::hash::RandomState,
    start: Instant,
}

impl std::fmt::Debug for Defences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Defences")
            .field("policy", &self.policy.load())
            .finish_non_exhaustive()
    }
}

impl Defences {
    /// The defences `config` asks for, with empty counts.
    pub fn new(config: &Config) -> Arc<Defences> {
        Arc::new(Defences {
            policy: ArcSwap::from_pointee(Policy::of(config)),
            addresses: zeroed(ADDRESS_SLOTS),
            accounts: zeroed(ACCOUNT_SLOTS),
            hasher: std::hash::RandomState::new(),
            start: Instant::now(),
        })
    }

    /// Takes the limits, rates, exempt networks and flood settings of `config` from now on. The
    /// counts stay: a connection already open keeps its place, and a lower limit refuses only
    /// what comes next. Sessions take new flood settings at their next line.
    pub fn set_policy(&self, config: &Config) {
        self.policy.store(Arc::new(Policy::of(config)));
    }

    /// The flood limits for sessions from addresses that are not exempt.
    pub fn flood(&self) -> FloodLimits {
        self.policy.load().flood
    }

    /// Whether connections from `ip` skip every per-address limit and flood control.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.policy.load().exempt.iter().any(|net| net.contains(ip))
    }

    /// Decides on a new connection from `ip`, counting it if it is let in.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Admission {
        let policy = self.policy.load();
        if policy.exempt.iter().any(|net| net.contains(ip)) {
            return Admission::Exempt;
        }
        let index = self.slot_of(ip);
        let slot = &self.addresses[index];
        if policy
            .conn_rate
            .take(&slot.connects, self.now_ns())
            .is_err()
        {
            return Admission::Refused(Refusal::TooFast);
        }
        if !take_one(&slot.conns, policy.max_conns) {
            return Admission::Refused(Refusal::TooMany);
        }
        if !take_one(&slot.unauth, policy.max_unauth) {
            slot.conns.fetch_sub(1, Relaxed);
            return Admission::Refused(Refusal::TooManyLoggingIn);
        }
        Admission::Admitted(Ticket {
            defences: self.clone(),
            slot: index as u32,
            ip,
            logging_in: true,
        })
    }

    /// Seconds a login attempt from `ticket`'s address must still wait, if it must.
    pub fn login_wait(&self, ticket: &Ticket) -> Option<u32> {
        ADDRESS_BACKOFF.wait(&self.addresses[ticket.slot()].failures, self.now_s())
    }

    /// Seconds a login attempt on account `name` is slowed by, if it is.
    pub fn account_wait(&self, name: &str) -> Option<u32> {
        ACCOUNT_BACKOFF.wait(self.account_slot(name), self.now_s())
    }

    /// Starts a password check from `ticket`'s address, if its failed logins do not hold it back
    /// and no other password from it is being checked. A check that starts is counted as a
    /// failure until [`Defences::login_succeeded`] says otherwise (see [`Backoff::attempt`]).
    pub fn begin_login(self: &Arc<Self>, ticket: &Ticket) -> LoginStart {
        let slot = &self.addresses[ticket.slot()];
        let now = self.now_s();
        if let Some(secs) = ADDRESS_BACKOFF.wait(&slot.failures, now) {
            return LoginStart::Throttled(secs);
        }
        if !take_one(&slot.checking, 1) {
            return LoginStart::Busy;
        }
        let mut checking = Checking {
            defences: self.clone(),
            slot: ticket.slot,
            suspect: false,
        };
        match ADDRESS_BACKOFF.attempt(&slot.failures, now) {
            Ok(before) => {
                checking.suspect = before > 0;
                LoginStart::Check(checking)
            }
            Err(secs) => LoginStart::Throttled(secs),
        }
    }

    /// Gives back an attempt started with [`Defences::begin_login`] that got no answer (the
    /// server was busy, or the account went away meanwhile).
    pub fn login_unanswered(&self, ticket: &Ticket) {
        ADDRESS_BACKOFF.forget_one(&self.addresses[ticket.slot()].failures);
    }

    /// Records a wrong password for account `name`, whatever the address (the address's own count
    /// was taken when the attempt began).
    pub fn login_failed(&self, name: &str) {
        ACCOUNT_BACKOFF.fail(self.account_slot(name), self.now_s());
    }

    /// Records a successful login to `name`: its failures, and its address's, are forgotten.
    pub fn login_succeeded(&self, ticket: Option<&Ticket>, name: &str) {
        if let Some(ticket) = ticket {
            ADDRESS_BACKOFF.clear(&self.addresses[ticket.slot()].failures);
        }
        ACCOUNT_BACKOFF.clear(self.account_slot(name));
    }

    /// How long until `ticket`'s address may create an account, if it may not now.
    pub fn signup_wait(&self, ticket: &Ticket) -> Option<Duration> {
        let slot = &self.addresses[ticket.slot()];
        self.policy
            .load()
            .signup_rate
            .check(&slot.signups, self.now_ns())
            .err()
    }

    /// Counts a sign-up from `ticket`'s address, or says how long until one is allowed.
    pub fn take_signup(&self, ticket: &Ticket) -> Result<(), Duration> {
        let slot = &self.addresses[ticket.slot()];
        self.policy
            .load()
            .signup_rate
            .take(&slot.signups, self.now_ns())
    }

    fn slot_of(&self, ip: IpAddr) -> usize {
        self.hasher.hash_one(address::limit_key(ip)) as usize & (ADDRESS_SLOTS - 1)
    }

    fn account_slot(&self, name: &str) -> &AtomicU64 {
        // Names are unique ignoring ASCII case (see `accounts`), so they are counted that way.
        let key = name.to_ascii_lowercase();
        &self.accounts[self.hasher.hash_one(key) as usize & (ACCOUNT_SLOTS - 1)]
    }

    /// Nanoseconds since start, never 0 (a rate's state of 0 means "never used").
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64 + 1
    }

    /// Whole seconds since start, plus one (a backoff's time of 0 means "none").
    fn now_s(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_secs() + 1).unwrap_or(u32::MAX)
    }
}

/// What [`Defences::begin_login`] says of a password about to be checked.
#[derive(Debug)]
pub enum LoginStart {
    /// Check it now; the address's turn lasts while this is held.
    Check(Checking),
    /// Failed logins from the address hold it back for this many more seconds.
    Throttled(u32),
    /// Another password from the address is being checked: ask again shortly.
    Busy,
}

/// An address's turn to have a password checked. One at a time per address, so one address
/// never has more than one bcrypt hash running however many connections it guesses from, and the
/// other worker threads stay free for everyone else. Given back when dropped.
#[derive(Debug)]
pub struct Checking {
    defences: Arc<Defences>,
    slot: u32,
    suspect: bool,
}

impl Checking {
    /// Whether the address failed a login lately (and has not logged in since): its password is
    /// then checked on the low-priority thread (see [`Accounts::login`](crate::accounts::Accounts::login)).
    pub fn is_suspect(&self) -> bool {
        self.suspect
    }
}

impl Drop for Checking {
    fn drop(&mut self) {
        self.defences.addresses[self.slot as usize]
            .checking
            .fetch_sub(1, Relaxed);
    }
}

/// Adds one to `count` if it is below `max` (0: no maximum). Whether it did.
fn take_one(count: &AtomicU32, max: u32) -> bool {
    count
        .fetch_update(Relaxed, Relaxed, |n| (max == 0 || n < max).then(|| n + 1))
        .is_ok()
}

/// Types whose every byte zero is a valid value (its default).
///
/// # Safety
/// Implement only for types made of atomic integers.
unsafe trait Zeroable {}

// SAFETY: an atomic integer of all-zero bytes is 0.
unsafe impl Zeroable for AtomicU64 {}
// SAFETY: made of atomic integers only.
unsafe impl Zeroable for Slot {}

/// A table of `len` zeroed values: the allocator hands out pages that are not touched (so not
/// resident) until a slot in them is used.
fn zeroed<T: Zeroable>(len: usize) -> Box<[T]> {
    assert!(
        len > 0 && std::mem::size_of::<T>() > 0,
        "a table takes memory"
    );
    let layout = std::alloc::Layout::array::<T>(len).expect("a table that fits in memory");
    // SAFETY: the layout's size is not zero (checked above).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` is a fresh allocation from the global allocator with the layout a `Box<[T]>`
    // of `len` values uses, and its zeroed bytes are valid values since `T: Zeroable`.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) }
}

/// A connection's place in its address's counts. Given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    defences: Arc<Defences>,
    slot: u32,
    ip: IpAddr,
    /// Counted among its address's connections that have not logged in.
    logging_in: bool,
}

impl Ticket {
    /// The address the connection came from.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The connection has logged in: it no longer counts toward `--max-unauth-per-ip`.
    pub fn logged_in(&mut self) {
        if std::mem::take(&mut self.logging_in) {
            self.defences.addresses[self.slot()]
                .unauth
                .fetch_sub(1, Relaxed);
        }
    }

    fn slot(&self) -> usize {
        self.slot as usize
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.logged_in();
        self.defences.addresses[self.slot()]
            .conns
            .fetch_sub(1, Relaxed);
    }
}

/// What a user is told when failed logins on their account hold a password check back for `wait`
/// (at login, and when a command asks for the password again).
pub fn account_slowed_notice(wait: Duration) -> String {
    format!(
        "Too many failed logins for this account recently; your password will be checked {}.",
        in_time(wait)
    )
}

/// "in N seconds" or "in N minutes", rounded up, for telling a user how long to wait.
pub fn in_time(wait: Duration) -> String {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    match secs {
        0 | 1 => "in 1 second".to_string(),
        2..=119 => format!("in {secs} seconds"),
        _ => format!("in {} minutes", secs.div_ceil(60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn defences(args: &[&str]) -> Arc<Defences> {
        let mut all = vec!["ringtalk"];
        all.extend_from_slice(args);
        Defences::new(&Config::parse_from(all))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn admitted(a: Admission) -> Ticket {
        match a {
            Admission::Admitted(t) => t,
            other => panic!("not admitted: {other:?}"),
        }
    }

    #[test]
    fn loopback_is_exempt_by_default_and_none_clears_the_list() {
        let d = defences(&[]);
        assert!(matches!(d.admit(ip("127.0.0.1")), Admission::Exempt));
        assert!(matches!(d.admit(ip("127.9.9.9")), Admission::Exempt));
        assert!(matches!(d.admit(ip("::1")), Admission::Exempt));
        assert!(matches!(d.admit(ip("192.0.2.1")), Admission::Admitted(_)));
        let d = defences(&["--exempt", "none"]);
        assert!(matches!(d.admit(ip("127.0.0.1")), Admission::Admitted(_)));
        let d = defences(&["--exempt", "none", "--exempt", "10.0.0.0/8"]);
        assert!(matches!(d.admit(ip("10.1.1.1")), Admission::Exempt));
        assert!(!d.is_exempt(ip("127.0.0.1")));
    }

    #[test]
    fn the_caps_count_open_and_not_logged_in_connections_and_tickets_give_back() {
        let d = defences(&[
            "--exempt",
            "none",
            "--max-conns-per-ip",
            "3",
            "--max-unauth-per-ip",
            "2",
        ]);
        let a = ip("192.0.2.1");
        let mut first = admitted(d.admit(a));
        let second = admitted(d.admit(a));
        assert!(matches!(
            d.admit(a),
            Admission::Refused(Refusal::TooManyLoggingIn)
        ));
        // Another address is counted apart.
        let other = admitted(d.admit(ip("192.0.2.2")));
        first.logged_in();
        first.logged_in(); // once only
        let third = admitted(d.admit(a));
        assert!(matches!(d.admit(a), Admission::Refused(Refusal::TooMany)));
        drop(second);
        let fourth = admitted(d.admit(a));
        drop((first, third, fourth, other));
        let slot = &d.addresses[d.slot_of(a)];
        assert_eq!(slot.conns.load(Relaxed), 0);
        assert_eq!(slot.unauth.load(Relaxed), 0);
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let d = defences(&["--max-conns-per-ip", "2", "--max-unauth-per-ip", "0"]);
        let _a = admitted(d.admit(ip("2001:db8:0:1::1")));
        let _b = admitted(d.admit(ip("2001:db8:0:1::2")));
        assert!(matches!(
            d.admit(ip("2001:db8:0:1:ffff::3")),
            Admission::Refused(Refusal::TooMany)
        ));
    }

    #[test]
    fn the_connect_rate_refuses_past_its_count() {
        let d = defences(&["--conn-rate", "3/600", "--max-unauth-per-ip", "0"]);
        let a = ip("198.51.100.7");
        let held: Vec<Ticket> = (0..3).map(|_| admitted(d.admit(a))).collect();
        drop(held);
        assert!(matches!(d.admit(a), Admission::Refused(Refusal::TooFast)));
    }

    #[test]
    fn login_failures_throttle_the_address_and_slow_the_account() {
        let d = defences(&["--exempt", "none"]);
        let t = admitted(d.admit(ip("192.0.2.9")));
        for n in 0..2 {
            let LoginStart::Check(turn) = d.begin_login(&t) else {
                panic!("refused")
            };
            // The first attempt of a run is not suspect; those after a failure are.
            assert_eq!(turn.is_suspect(), n > 0);
            // One check at a time per address.
            assert!(matches!(d.begin_login(&t), LoginStart::Busy));
            d.login_failed("Alice");
            drop(turn);
        }
        assert_eq!(d.login_wait(&t), None);
        let third = d.begin_login(&t);
        assert!(matches!(&third, LoginStart::Check(c) if c.is_suspect()));
        drop(third);
        // Counted as it began, before its answer.
        assert_eq!(d.login_wait(&t), Some(ADDRESS_BACKOFF.first_delay_s));
        assert!(matches!(
            d.begin_login(&t),
            LoginStart::Throttled(s) if s == ADDRESS_BACKOFF.first_delay_s
        ));
        d.login_failed("alice");
        // The account is not slowed yet (3 < 5), but counts every address's failures, in any case.
        assert_eq!(d.account_wait("ALICE"), None);
        d.login_failed("alice");
        d.login_failed("alice");
        assert_eq!(d.account_wait("alice"), Some(ACCOUNT_BACKOFF.first_delay_s));
        assert_eq!(d.account_wait("bob"), None);
        d.login_succeeded(Some(&t), "alice");
        assert_eq!(d.login_wait(&t), None);
        assert_eq!(d.account_wait("alice"), None);
    }

    #[test]
    fn sign_ups_are_counted_per_address() {
        let d = defences(&["--exempt", "none", "--signup-rate", "2/600"]);
        let t = admitted(d.admit(ip("192.0.2.20")));
        assert!(d.signup_wait(&t).is_none());
        assert!(d.take_signup(&t).is_ok());
        assert!(d.take_signup(&t).is_ok());
        let wait = d.take_signup(&t).unwrap_err();
        assert!(wait > Duration::from_secs(290) && wait <= Duration::from_secs(300));
        assert!(d.signup_wait(&t).is_some());
        let u = admitted(d.admit(ip("192.0.2.21")));
        assert!(d.take_signup(&u).is_ok());
    }

    #[test]
    fn waits_are_told_in_whole_seconds_or_minutes_rounded_up() {
        assert_eq!(in_time(Duration::from_millis(300)), "in 1 second");
        assert_eq!(in_time(Duration::from_millis(29_001)), "in 30 seconds");
        assert_eq!(in_time(Duration::from_secs(119)), "in 119 seconds");
        assert_eq!(in_time(Duration::from_secs(121)), "in 3 minutes");
        assert_eq!(in_time(Duration::from_secs(300)), "in 5 minutes");
    }

    #[test]
    fn the_tables_start_empty() {
        let d = defences(&[]);
        assert_eq!(d.addresses.len(), ADDRESS_SLOTS);
        assert!(d.addresses.iter().all(|s| s.conns.load(Relaxed) == 0));
        assert!(std::mem::size_of::<Slot>() <= 40);
    }
}
