//! The cluster's account and channel store against a real `nats-server` with JetStream: what one
//! node stores another finds, concurrent creates on two nodes make exactly one, and a store whose
//! NATS is away answers an error in time instead of holding its worker.
//!
//! Each [`Store`] here has its own NATS connection and thread, as each node would. The tests need
//! `nats-server` (see `common/nats.rs`); without it they are skipped, unless
//! `RINGTALK_REQUIRE_NATS` is set.

#[path = "common/nats.rs"]
mod nats;

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use nats::Nats;
use ringtalk::accounts::{AccountError, Accounts, Created, Login, User, MIN_BCRYPT_COST};
use ringtalk::cluster::store::{Store, StoreGuard, REQUEST_TIMEOUT};
use shard_proto::ChannelName;

/// Stands in for a bcrypt hash: the store keeps hashes, it never checks them.
const HASH: &str = "$2b$04$abcdefghijklmnopqrstuu5mDP0VvMT5NU5rbqmeTGL2ycNeUkwXe";

/// A store of its own (its own connection and thread) on the NATS server at `url`.
fn store(url: &str) -> (Store, StoreGuard) {
    Store::start(url).expect("the store starts")
}

fn chan(name: &str) -> ChannelName {
    ChannelName::new(name).unwrap()
}

fn created(outcome: Created) -> User {
    match outcome {
        Created::Ok(user) => user,
        other => panic!("expected a new user, got {other:?}"),
    }
}

/// Runs `create` for each of `spellings` on its own store, all released at once by a barrier,
/// and returns the outcomes in the order of `spellings`.
fn race<T: Send + 'static>(
    stores: &[Store],
    spellings: &[String],
    create: fn(&Store, &str) -> T,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(spellings.len()));
    let racers: Vec<_> = stores
        .iter()
        .zip(spellings)
        .map(|(store, spelling)| {
            let (store, spelling, barrier) = (store.clone(), spelling.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                create(&store, &spelling)
            })
        })
        .collect();
    racers
        .into_iter()
        .map(|racer| racer.join().expect("a racer panicked"))
        .collect()
}

#[test]
fn an_account_made_through_one_store_is_found_through_another() {
    let Some(nats) = Nats::start() else { return };
    let (first, _first_guard) = store(&nats.url());
    let (second, _second_guard) = store(&nats.url());

    assert_eq!(second.find_user("alice").unwrap(), None);
    let alice = created(first.create_user("Alice", HASH).unwrap());
    assert_eq!(alice.name, "Alice");
    assert!(alice.id > 0);
    // Any case finds it, with the case it was made in, the same id, and its hash.
    for spelling in ["Alice", "alice", "ALICE"] {
        assert_eq!(
            second.find_user(spelling).unwrap(),
            Some((alice.clone(), HASH.to_owned())),
            "{spelling}"
        );
    }
    assert_eq!(
        second.create_user("aLiCe", "$2b$04$other").unwrap(),
        Created::NameTaken
    );
    let bob = created(second.create_user("bob", HASH).unwrap());
    assert_ne!(bob.id, alice.id);
    assert_eq!(
        first.find_user("Bob").unwrap(),
        Some((bob, HASH.to_owned()))
    );
    // Not usernames: nobody, and no request that NATS would refuse as a key.
    for not_a_name in ["", "a b", "a.b", "a>", "*"] {
        assert_eq!(first.find_user(not_a_name).unwrap(), None, "{not_a_name:?}");
    }
    assert!(matches!(
        first.create_user("a b", HASH),
        Err(AccountError::Failed(_))
    ));
}

#[test]
fn two_stores_creating_one_account_at_once_make_exactly_one() {
    let Some(nats) = Nats::start() else { return };
    let (first, _first_guard) = store(&nats.url());
    let (second, _second_guard) = store(&nats.url());
    let stores = [first.clone(), second.clone()];
    let mut ids = HashSet::new();
    for round in 0..20 {
        let name = format!("racer{round}");
        let spellings = [name.clone(), name.to_uppercase()];
        let outcomes = race(&stores, &spellings, |store, name| {
            store.create_user(name, HASH).unwrap()
        });
        let winners: Vec<&User> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Created::Ok(user) => Some(user),
                _ => None,
            })
            .collect();
        let losers = outcomes
            .iter()
            .filter(|outcome| **outcome == Created::NameTaken)
            .count();
        assert_eq!((winners.len(), losers), (1, 1), "{outcomes:?}");
        let winner = winners[0].clone();
        assert!(ids.insert(winner.id), "id {} given twice", winner.id);
        for store in [&first, &second] {
            assert_eq!(
                store.find_user(&name).unwrap(),
                Some((winner.clone(), HASH.to_owned()))
            );
        }
    }
}

#[test]
fn two_stores_creating_one_channel_at_once_make_exactly_one_whatever_the_case() {
    let Some(nats) = Nats::start() else { return };
    let (first, _first_guard) = store(&nats.url());
    let (second, _second_guard) = store(&nats.url());
    let stores = [first.clone(), second.clone()];
    let mut pairs = vec![["Ärger".to_owned(), "ärger".to_owned()]];
    pairs.extend((1..20).map(|i| [format!("Ωmega{i}"), format!("ωMEGA{i}")]));
    for spellings in &pairs {
        let outcomes = race(&stores, spellings, |store, name| {
            store.create_channel(&chan(name), 1).unwrap()
        });
        assert_eq!(
            outcomes.iter().filter(|&&made| made).count(),
            1,
            "{spellings:?}: {outcomes:?}"
        );
    }
    let listed = first.list_channels().unwrap();
    assert_eq!(second.list_channels().unwrap(), listed);
    assert_eq!(listed.len(), pairs.len(), "{listed:?}");
    for (spellings, name) in pairs.iter().zip(&listed) {
        assert!(
            spellings.contains(name),
            "{name:?} is not one of {spellings:?}"
        );
    }
}

#[test]
fn each_store_lists_the_channels_of_both_in_creation_order() {
    let Some(nats) = Nats::start() else { return };
    let (first, _first_guard) = store(&nats.url());
    let (second, _second_guard) = store(&nats.url());
    assert!(first.list_channels().unwrap().is_empty());
    assert!(first.create_channel(&chan("lobby"), 1).unwrap());
    assert!(second.create_channel(&chan("Rust"), 2).unwrap());
    assert!(first.create_channel(&chan("Çafé"), 1).unwrap());
    assert!(!second.create_channel(&chan("ÇAFÉ"), 2).unwrap());
    assert!(!first.create_channel(&chan("rust"), 1).unwrap());
    for store in [&first, &second] {
        assert_eq!(store.list_channels().unwrap(), ["lobby", "Rust", "Çafé"]);
    }
}

#[test]
fn a_store_started_before_nats_fails_in_time_then_works_once_nats_comes() {
    // A port with nothing on it yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let (early, _guard) = store(&format!("nats://127.0.0.1:{port}"));
    // Two requests at once: each fails by itself in time, neither waits behind the other.
    let asked = Instant::now();
    let find = {
        let early = early.clone();
        std::thread::spawn(move || early.find_user("alice"))
    };
    let list = {
        let early = early.clone();
        std::thread::spawn(move || early.list_channels())
    };
    assert!(matches!(find.join().unwrap(), Err(AccountError::Failed(_))));
    assert!(matches!(list.join().unwrap(), Err(AccountError::Failed(_))));
    let waited = asked.elapsed();
    assert!(
        waited < REQUEST_TIMEOUT + Duration::from_secs(2),
        "the answers took {waited:?}"
    );

    let Some(_nats) = Nats::start_on(port, tempfile::tempdir().unwrap()) else {
        return;
    };
    // The client reconnects by itself (after a back-off of up to 4 s), and the next request
    // creates the buckets the first attempt could not.
    let deadline = Instant::now() + Duration::from_secs(30);
    let made = loop {
        match early.create_user("Early", HASH) {
            Ok(outcome) => break created(outcome),
            Err(e) if Instant::now() < deadline => eprintln!("not yet: {e}"),
            Err(e) => panic!("the store did not come back with NATS: {e}"),
        }
    };
    assert_eq!(
        early.find_user("early").unwrap(),
        Some((made, HASH.to_owned()))
    );
}

#[test]
fn a_store_that_has_stopped_fails_at_once() {
    let Some(nats) = Nats::start() else { return };
    let (stopped, guard) = store(&nats.url());
    assert_eq!(stopped.find_user("alice").unwrap(), None);
    guard.shutdown();
    let asked = Instant::now();
    assert!(matches!(
        stopped.find_user("alice"),
        Err(AccountError::Failed(_))
    ));
    assert!(asked.elapsed() < REQUEST_TIMEOUT, "{:?}", asked.elapsed());
}

#[test]
fn accounts_on_two_nodes_share_users_and_channels_through_their_stores() {
    let Some(nats) = Nats::start() else { return };
    let (first_store, _first_store_guard) = store(&nats.url());
    let (second_store, _second_store_guard) = store(&nats.url());
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let open = |dir: &tempfile::TempDir, store: &Store| {
        Accounts::open_with_store(dir.path(), MIN_BCRYPT_COST, 2, 16, Some(store.clone()))
            .expect("accounts open")
    };
    let (first, first_guard) = open(&first_dir, &first_store);
    let (second, _second_guard) = open(&second_dir, &second_store);

    let carol = created(block_on(first.create_user("Carol", "secret1")).unwrap());
    assert!(block_on(second.user_exists("carol")).unwrap());
    assert_eq!(
        block_on(second.login("carol", "secret1", false)).unwrap(),
        Login::Ok(carol.clone())
    );
    assert_eq!(
        block_on(second.login("CAROL", "secret1", true)).unwrap(),
        Login::Ok(carol.clone())
    );
    assert_eq!(
        block_on(second.login("carol", "secret2", false)).unwrap(),
        Login::WrongPassword
    );
    assert_eq!(
        block_on(second.login("dave", "secret1", false)).unwrap(),
        Login::NoSuchUser
    );
    assert_eq!(
        block_on(second.create_user("CAROL", "another1")).unwrap(),
        Created::NameTaken
    );

    assert!(block_on(first.create_channel(&chan("Ärger"), carol.id)).unwrap());
    assert!(!block_on(second.create_channel(&chan("ärger"), carol.id)).unwrap());
    assert_eq!(block_on(second.list_channels()).unwrap(), ["Ärger"]);

    // None of it went into the first node's SQLite file.
    first_guard.shutdown();
    let (alone, _alone_guard) =
        Accounts::open(first_dir.path(), MIN_BCRYPT_COST, 1, 4).expect("the file opens");
    assert!(!block_on(alone.user_exists("carol")).unwrap());
    assert!(block_on(alone.list_channels()).unwrap().is_empty());
}
