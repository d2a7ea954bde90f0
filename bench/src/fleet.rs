//! The parent's side of the worker processes: start them, talk to them, collect what they report.
//!
//! Each worker is this same binary run as `ringtalk-bench worker`. A thread per worker turns its
//! stdout lines into [`Msg`]s on one channel, which other sources (the churn probe) share, so the
//! parent waits on a single queue.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::plan::{Command, Plan, Report, SetupReport, WorkerReport};

/// Something the parent waits for.
pub enum Msg {
    /// A report line from worker `i`.
    Worker(usize, Report),
    /// Worker `i` closed its stdout (exited) or wrote something unreadable.
    Gone(usize, String),
    /// The churn probe's member total at a time (CLOCK_MONOTONIC ns), or why it failed.
    Probe(u64, Result<u64, String>),
}

/// Running workers.
pub struct Fleet {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    pub rx: mpsc::Receiver<Msg>,
    /// For other sources of [`Msg`]s.
    pub tx: mpsc::Sender<Msg>,
    /// Workers that have reported `Done` or gone.
    finished: Vec<bool>,
    pub reports: Vec<Option<WorkerReport>>,
    /// Why workers went away without reporting.
    pub lost: Vec<String>,
}

impl Fleet {
    /// Starts one worker per plan.
    pub fn start(plans: &[Plan]) -> anyhow::Result<Fleet> {
        let exe = std::env::current_exe().context("finding the bench's own executable")?;
        let (tx, rx) = mpsc::channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            let mut child = Process::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting worker {i}"))?;
            let mut stdin = child.stdin.take().expect("piped stdin");
            writeln!(stdin, "{}", serde_json::to_string(plan)?)?;
            stdin.flush()?;
            let stdout = child.stdout.take().expect("piped stdout");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Report>(&line) {
                        Ok(r) => {
                            if tx.send(Msg::Worker(i, r)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Msg::Gone(i, format!("bad report line: {e}")));
                            return;
                        }
                    }
                }
                let _ = tx.send(Msg::Gone(i, "worker exited".to_string()));
            });
            children.push(child);
            stdins.push(Some(stdin));
        }
        let n = plans.len();
        Ok(Fleet {
            children,
            stdins,
            rx,
            tx,
            finished: vec![false; n],
            reports: vec![None; n],
            lost: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Sends a command to every worker still running.
    pub fn broadcast(&mut self, cmd: &Command) {
        let line = serde_json::to_string(cmd).expect("commands serialize");
        for stdin in self.stdins.iter_mut() {
            if let Some(s) = stdin {
                if writeln!(s, "{line}").and_then(|_| s.flush()).is_err() {
                    *stdin = None;
                }
            }
        }
    }

    /// Records a message that ends a worker: its report, or why it was lost.
    fn note(&mut self, msg: &Msg) {
        match msg {
            Msg::Worker(i, Report::Done(report)) => {
                self.finished[*i] = true;
                self.reports[*i] = Some((**report).clone());
            }
            Msg::Gone(i, why) if !self.finished[*i] => {
                self.finished[*i] = true;
                self.lost.push(format!("worker {i}: {why}"));
            }
            _ => {}
        }
    }

    /// The next message, or `None` after `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Msg> {
        let msg = self.rx.recv_timeout(timeout).ok()?;
        self.note(&msg);
        Some(msg)
    }

    pub fn all_finished(&self) -> bool {
        self.finished.iter().all(|&f| f)
    }

    /// Waits until every worker has reported `Ready`; returns their setup reports.
    pub fn wait_ready(&mut self) -> anyhow::Result<Vec<SetupReport>> {
        let mut ready: Vec<Option<SetupReport>> = vec![None; self.len()];
        while ready.iter().any(Option::is_none) {
            match self.next(Duration::from_secs(3600)) {
                Some(Msg::Worker(i, Report::Ready(s))) => ready[i] = Some(s),
                Some(Msg::Gone(i, why)) => bail!("worker {i} failed during setup: {why}"),
                Some(_) => {}
                None => bail!("no word from the workers for an hour"),
            }
        }
        Ok(ready.into_iter().map(Option::unwrap).collect())
    }

    /// Waits until every worker has finished (up to `limit`), then reaps them.
    pub fn finish(&mut self, limit: Duration) -> Vec<WorkerReport> {
        let deadline = Instant::now() + limit;
        let mut stopped = false;
        while !self.all_finished() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if stopped {
                    break;
                }
                self.broadcast(&Command::Stop);
                stopped = true;
                continue;
            }
            self.next(left);
        }
        self.reap();
        self.reports.iter().flatten().cloned().collect()
    }

    fn reap(&mut self) {
        self.stdins.iter_mut().for_each(|s| *s = None);
        for (i, child) in self.children.iter_mut().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        self.lost.push(format!("worker {i} did not exit; killed"));
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
