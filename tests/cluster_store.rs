//! The cluster's account and channel store against a real `nats-server` with JetStream: what one
//! node stores another finds, concurrent creates on two nodes make exactly one, concurrent
//! updates lose nothing, an account keeps its id through updates, and a store whose NATS is away
//! answers an error in time instead of holding its worker.
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
use ringtalk::accounts::{
    AccountError, Accounts, ChannelSettings, Created, Deleted, LoggedIn, Login, PasswordChange,
    Profile, User, MIN_BCRYPT_COST,
};
use ringtalk::cluster::store::{Store, StoreGuard, ACCOUNT_IDS_BUCKET, REQUEST_TIMEOUT};
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
    assert_eq!(&*alice.name, "Alice");
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
        Login::Ok(LoggedIn {
            user: carol.clone(),
            ignoring: Vec::new(),
            admin: false
        })
    );
    assert_eq!(
        block_on(second.login("CAROL", "secret1", true)).unwrap(),
        Login::Ok(LoggedIn {
            user: carol.clone(),
            ignoring: Vec::new(),
            admin: false
        })
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

/// Two nodes' accounts over one NATS server, each with its own store and SQLite file.
struct TwoNodes {
    first: Accounts,
    second: Accounts,
    _guards: Vec<Box<dyn std::any::Any>>,
}

fn two_nodes(url: &str) -> TwoNodes {
    let mut guards: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut node = || {
        let (store, store_guard) = store(url);
        let dir = tempfile::tempdir().unwrap();
        let (accounts, guard) =
            Accounts::open_with_store(dir.path(), MIN_BCRYPT_COST, 2, 16, Some(store))
                .expect("accounts open");
        // Dropped in this order: the workers before their store.
        guards.push(Box::new(guard));
        guards.push(Box::new(store_guard));
        guards.push(Box::new(dir));
        accounts
    };
    let (first, second) = (node(), node());
    TwoNodes {
        first,
        second,
        _guards: guards,
    }
}

/// Deletes an entry of a bucket behind the stores' backs.
fn delete_behind_the_stores(url: &str, bucket: &str, key: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value(bucket)
            .await
            .unwrap();
        kv.delete(key).await.unwrap();
    });
}

#[test]
fn an_accounts_id_stays_through_a_password_change_and_flags_and_a_new_account_of_its_name_gets_another(
) {
    let Some(nats) = Nats::start() else { return };
    let nodes = two_nodes(&nats.url());
    let (first, second) = (&nodes.first, &nodes.second);
    let dana = created(block_on(first.create_user("Dana", "first-pw")).unwrap());
    assert_eq!(
        block_on(second.change_password("dana", "wrong-pw", "second-pw")).unwrap(),
        PasswordChange::WrongPassword
    );
    assert_eq!(
        block_on(second.change_password("dana", "first-pw", "second-pw")).unwrap(),
        PasswordChange::Changed
    );
    assert_eq!(
        block_on(first.login("dana", "first-pw", false)).unwrap(),
        Login::WrongPassword
    );
    assert!(block_on(second.set_admin("DANA", true)).unwrap());
    block_on(first.set_ignoring("dana", vec!["eve".into(), "Eve".into(), "mal".into()])).unwrap();
    block_on(second.record_last_seen("dana", 1_700_000_000)).unwrap();
    assert_eq!(
        block_on(first.login("DANA", "second-pw", false)).unwrap(),
        Login::Ok(LoggedIn {
            user: dana.clone(),
            ignoring: vec!["eve".to_owned(), "mal".to_owned()],
            admin: true
        })
    );
    assert_eq!(
        block_on(second.profile("dana")).unwrap(),
        Some(Profile {
            name: "Dana".to_owned(),
            created_at: block_on(first.profile("dana")).unwrap().unwrap().created_at,
            last_seen: Some(1_700_000_000),
            admin: true,
            banned: false
        })
    );
    assert_eq!(block_on(first.admins()).unwrap(), ["Dana"]);
    assert!(block_on(first.set_banned("dana", true)).unwrap());
    assert_eq!(
        block_on(second.login("dana", "second-pw", false)).unwrap(),
        Login::Banned
    );
    assert!(!block_on(first.set_banned("nobody", true)).unwrap());

    assert_eq!(
        block_on(first.delete_account("dana", "first-pw")).unwrap(),
        Deleted::WrongPassword
    );
    assert_eq!(
        block_on(first.delete_account("dana", "second-pw")).unwrap(),
        Deleted::Deleted
    );
    assert!(!block_on(second.user_exists("dana")).unwrap());
    assert_eq!(block_on(second.profile("dana")).unwrap(), None);
    assert!(block_on(second.admins()).unwrap().is_empty());
    let again = created(block_on(second.create_user("dana", "third-pw")).unwrap());
    assert!(again.id > dana.id, "{again:?} after {dana:?}");
    assert_eq!(
        block_on(first.login("Dana", "third-pw", false)).unwrap(),
        Login::Ok(LoggedIn {
            user: again,
            ignoring: Vec::new(),
            admin: false
        })
    );
}

#[test]
fn channel_settings_round_trip_across_nodes_and_a_deleted_owner_is_none() {
    let Some(nats) = Nats::start() else { return };
    let nodes = two_nodes(&nats.url());
    let (first, second) = (&nodes.first, &nodes.second);
    let fred = created(block_on(first.create_user("Fred", "secret1")).unwrap());
    created(block_on(first.create_user("gina", "secret1")).unwrap());
    assert_eq!(
        block_on(second.channel_settings(&chan("Hof"))).unwrap(),
        None
    );
    assert!(block_on(first.create_channel(&chan("Hof"), fred.id)).unwrap());
    assert!(block_on(first.create_channel(&chan("Ärger"), fred.id)).unwrap());
    let by = |owner: &str| ChannelSettings {
        owner: Some(owner.to_owned()),
        ..ChannelSettings::default()
    };
    assert_eq!(
        block_on(second.channel_settings(&chan("hof"))).unwrap(),
        Some(by("Fred"))
    );
    let settings = ChannelSettings {
        owner: Some("GINA".to_owned()),
        topic: "line one\nline \\two".to_owned(),
        topic_open: true,
        invite_only: true,
        capacity: 12,
        bans: vec!["zed".into(), "ZED".into(), "amy".into()],
    };
    assert!(block_on(second.save_channel_settings(&chan("HOF"), settings.clone())).unwrap());
    let stored = ChannelSettings {
        owner: Some("gina".to_owned()),
        bans: vec!["zed".into(), "amy".into()],
        ..settings.clone()
    };
    assert_eq!(
        block_on(first.channel_settings(&chan("hof"))).unwrap(),
        Some(stored.clone())
    );
    // Creation order, though the first one was updated after the second was made.
    assert_eq!(
        block_on(first.all_channel_settings()).unwrap(),
        [(chan("Hof"), stored.clone()), (chan("Ärger"), by("Fred"))]
    );
    assert_eq!(block_on(second.list_channels()).unwrap(), ["Hof", "Ärger"]);
    assert!(!block_on(first.save_channel_settings(&chan("nowhere"), settings)).unwrap());

    // A channel whose owner the id index does not know (made before it existed) still names
    // its owner, by a pass over the accounts.
    delete_behind_the_stores(&nats.url(), ACCOUNT_IDS_BUCKET, &fred.id.to_string());
    assert_eq!(
        block_on(second.channel_settings(&chan("ärger"))).unwrap(),
        Some(by("Fred"))
    );
    // Its owner deleted, it has none, and a new account of the name does not inherit it.
    assert_eq!(
        block_on(first.delete_account("fred", "secret1")).unwrap(),
        Deleted::Deleted
    );
    assert_eq!(
        block_on(second.channel_settings(&chan("ärger"))).unwrap(),
        Some(ChannelSettings::default())
    );
    created(block_on(second.create_user("Fred", "secret2")).unwrap());
    assert_eq!(
        block_on(first.all_channel_settings()).unwrap()[1],
        (chan("Ärger"), ChannelSettings::default())
    );

    assert!(block_on(second.delete_channel(&chan("HOF"))).unwrap());
    assert!(!block_on(first.delete_channel(&chan("hof"))).unwrap());
    assert_eq!(
        block_on(first.channel_settings(&chan("hof"))).unwrap(),
        None
    );
    assert_eq!(block_on(first.list_channels()).unwrap(), ["Ärger"]);
    let gina = block_on(first.login("gina", "secret1", false)).unwrap();
    let Login::Ok(gina) = gina else {
        panic!("{gina:?}")
    };
    assert!(block_on(second.create_channel(&chan("hof"), gina.user.id)).unwrap());
    assert_eq!(
        block_on(first.channel_settings(&chan("Hof"))).unwrap(),
        Some(by("gina"))
    );
}

/// Two stores changing one account at the same moment, each a different field, round after
/// round: after each round both changes are there. (Without the compare-and-set, both read the
/// same value and the second write puts back the field the first one changed.)
#[test]
fn concurrent_updates_of_one_account_on_two_nodes_are_not_lost() {
    const ROUNDS: i64 = 40;
    let Some(nats) = Nats::start() else { return };
    let (first, _first_guard) = store(&nats.url());
    let (second, _second_guard) = store(&nats.url());
    let hugo = created(first.create_user("hugo", HASH).unwrap());
    let stores = [first.clone(), second.clone()];
    let ignoring = |round: i64| -> Vec<String> { (0..round).map(|i| format!("pest{i}")).collect() };
    for round in 1..=ROUNDS {
        let barrier = Arc::new(Barrier::new(2));
        let writers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(which, store)| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    if which == 0 {
                        store.record_last_seen("hugo", round)
                    } else {
                        store.set_ignoring("HUGO", ignoring(round))
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("a writer panicked").unwrap();
        }
        for store in [&first, &second] {
            let now = store.find_account("hugo").unwrap().expect("hugo is there");
            assert_eq!(now.user, hugo, "round {round}");
            assert_eq!(now.last_seen, Some(round), "round {round}");
            assert_eq!(now.ignoring, ignoring(round), "round {round}");
        }
    }
}
