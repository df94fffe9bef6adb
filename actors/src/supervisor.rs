//! Supervision: one small supervisor used for the node's root and for every
//! service group. It starts its children in order and restarts any that fail,
//! with a growing pause so a child that cannot start (database down) does not
//! spin. Children reload what they need from PostgreSQL when they start.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};

/// Starts one child linked to `supervisor` and returns its cell.
pub type SpawnFn = Arc<
    dyn Fn(ActorCell) -> Pin<Box<dyn Future<Output = Result<ActorCell, String>> + Send>>
        + Send
        + Sync,
>;

/// A child the supervisor keeps alive.
/// How long a stopping supervisor waits for one child.
const CHILD_STOP: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    pub spawn: SpawnFn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .finish()
    }
}

impl ChildSpec {
    /// A child spawned by `spawn`, which receives the supervisor's cell.
    pub fn new<F, Fut>(name: impl Into<String>, spawn: F) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, String>> + Send + 'static,
    {
        Self {
            name: name.into(),
            spawn: Arc::new(move |sup| Box::pin(spawn(sup))),
        }
    }
}

/// The supervisor's mailbox; local only.
#[derive(Debug, ractor_cluster::RactorMessage)]
pub enum SupervisorMsg {
    /// Start the named child again (sent to itself after a pause).
    Restart(String),
    /// Names of the children running now.
    Running(RpcReplyPort<Vec<String>>),
}

#[derive(Debug)]
pub struct Supervisor;

#[derive(Debug)]
pub struct SupervisorState {
    specs: Vec<ChildSpec>,
    running: HashMap<ActorId, (String, ActorCell)>,
    /// Per child: consecutive quick failures and when it last started.
    history: HashMap<String, (u32, Instant)>,
}

/// A child that lived this long before failing is restarted without delay.
const STABLE: Duration = Duration::from_secs(30);
const MAX_PAUSE: Duration = Duration::from_secs(10);

impl Supervisor {
    /// Starts a supervisor named `name` with `children`, linked to `parent` if given.
    pub async fn start(
        name: String,
        children: Vec<ChildSpec>,
        parent: Option<ActorCell>,
    ) -> Result<ActorRef<SupervisorMsg>, String> {
        let spawned = match parent {
            Some(parent) => Actor::spawn_linked(Some(name), Supervisor, children, parent).await,
            None => Actor::spawn(Some(name), Supervisor, children).await,
        };
        spawned.map(|(actor, _)| actor).map_err(|e| e.to_string())
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Vec<ChildSpec>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        specs: Vec<ChildSpec>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            specs,
            running: HashMap::new(),
            history: HashMap::new(),
        };
        // Children that cannot start now are retried; the supervisor itself
        // comes up regardless, so one broken service does not stop a node.
        let names: Vec<String> = state.specs.iter().map(|s| s.name.clone()).collect();
        for name in names {
            state.start_child(&myself, &name).await;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Waits for each child to finish the message in hand: a node that
        // exits with a handler mid-way (a mail sent, its row not yet marked)
        // would have another node do the work twice.
        let children = state.running.drain().map(|(_, (_, cell))| async move {
            let started = std::time::Instant::now();
            let _ = cell
                .stop_and_wait(Some("supervisor stopping".into()), Some(CHILD_STOP))
                .await;
            tracing::debug!(child = ?cell.get_name(), took = ?started.elapsed(), "stopped");
        });
        futures::future::join_all(children).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(name) => state.start_child(&myself, &name).await,
            SupervisorMsg::Running(reply) => {
                let names = state.running.values().map(|(n, _)| n.clone()).collect();
                let _ = reply.send(names);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (id, reason) = match &event {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.get_id(),
                format!("stopped: {}", reason.as_deref().unwrap_or("no reason")),
            ),
            _ => return Ok(()),
        };
        if let Some((name, _)) = state.running.remove(&id) {
            tracing::warn!(supervisor = ?myself.get_name(), child = %name, %reason, "child ended; restarting");
            state.schedule_restart(&myself, name);
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn start_child(&mut self, myself: &ActorRef<SupervisorMsg>, name: &str) {
        let Some(spec) = self.specs.iter().find(|s| s.name == name).cloned() else {
            return;
        };
        match (spec.spawn)(myself.get_cell()).await {
            Ok(cell) => {
                let failures = self.history.get(name).map_or(0, |(n, _)| *n);
                self.history
                    .insert(name.to_owned(), (failures, Instant::now()));
                self.running.insert(cell.get_id(), (name.to_owned(), cell));
            }
            Err(e) => {
                tracing::warn!(supervisor = ?myself.get_name(), child = %name, error = %e, "child could not start");
                self.schedule_restart(myself, name.to_owned());
            }
        }
    }

    fn schedule_restart(&mut self, myself: &ActorRef<SupervisorMsg>, name: String) {
        let (failures, started) = self
            .history
            .get(&name)
            .copied()
            .unwrap_or((0, Instant::now()));
        let failures = if started.elapsed() > STABLE {
            0
        } else {
            failures + 1
        };
        self.history.insert(name.clone(), (failures, started));
        let pause =
            Duration::from_millis(50u64.saturating_mul(1 << failures.min(8))).min(MAX_PAUSE);
        myself.send_after(pause, move || SupervisorMsg::Restart(name));
    }
}
