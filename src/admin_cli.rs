//! `ringtalk admin`: account administration on a data directory while its server is stopped.
//!
//! The binary's own module (not the library's): it only parses its arguments, takes the data
//! directory's lock (see [`ringtalk::data_dir`]) so that it never edits accounts under a running
//! server, and calls [`Accounts`] as the server would. It works on the SQLite database of the data
//! directory; a cluster's accounts are in NATS, which it does not reach.
//!
//! Exit status: 0 done; 1 no user of that name; 2 could not do it (the arguments, the lock, the
//! database), with the reason on stderr.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use futures::executor::block_on;
use ringtalk::accounts::{AccountError, Accounts, DB_FILE, MAX_BCRYPT_COST};
use ringtalk::config::DEFAULT_DATA_DIR;
use ringtalk::data_dir::DataDirLock;

/// Exit status: no user has the name given.
const NO_SUCH_USER: i32 = 1;
/// Exit status: the command could not be carried out.
const FAILED: i32 = 2;

/// `ringtalk admin`'s arguments.
#[derive(Debug, Parser)]
#[command(
    name = "ringtalk admin",
    about = "Administer the accounts of a data directory while its server is stopped"
)]
struct Args {
    /// The server's data directory.
    #[arg(long, global = true, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[command(subcommand)]
    action: Action,
}

/// What to do.
#[derive(Debug, Subcommand)]
enum Action {
    /// Make the user NAME an admin.
    Grant {
        /// The username (any case).
        name: String,
    },
    /// Make the user NAME no longer an admin.
    Revoke {
        /// The username (any case).
        name: String,
    },
    /// Print the admins' names, one per line.
    List,
}

/// Runs `ringtalk admin` with the arguments that follow `admin`; returns the exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args = std::iter::once(OsString::from("ringtalk admin")).chain(args);
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        // Help and usage errors, printed as clap prints them, with its status (0 or 2).
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match run(&args) {
        Ok(status) => status,
        Err(why) => {
            eprintln!("ringtalk admin: {why}");
            FAILED
        }
    }
}

/// Does what `args` say, printing the outcome; an error is the reason it could not.
fn run(args: &Args) -> Result<i32, String> {
    let dir = &args.data_dir;
    if !dir.join(DB_FILE).is_file() {
        return Err(format!(
            "no ringtalk database in {} (no {DB_FILE}); give the server's --data-dir",
            dir.display()
        ));
    }
    let _lock = DataDirLock::acquire(dir).map_err(|e| e.to_string())?;
    let (accounts, guard) = open(dir)?;
    let outcome = act(&accounts, &args.action);
    // The database is closed cleanly before the process exits.
    guard.shutdown();
    outcome.map_err(|e| format!("{e}"))
}

fn open(dir: &Path) -> Result<(Accounts, ringtalk::workers::WorkersGuard), String> {
    // No password is hashed here: the cost only has to be one the database accepts.
    Accounts::open(dir, MAX_BCRYPT_COST, 1, 4).map_err(|e| e.to_string())
}

fn act(accounts: &Accounts, action: &Action) -> Result<i32, AccountError> {
    let (name, admin) = match action {
        Action::List => {
            for name in block_on(accounts.admins())? {
                println!("{name}");
            }
            return Ok(0);
        }
        Action::Grant { name } => (name, true),
        Action::Revoke { name } => (name, false),
    };
    if !block_on(accounts.set_admin(name, admin))? {
        println!("No user named {name}.");
        return Ok(NO_SUCH_USER);
    }
    if admin {
        println!("{name} is now an admin.");
    } else {
        println!("{name} is no longer an admin.");
    }
    Ok(0)
}
