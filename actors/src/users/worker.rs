//! A request worker of the user service. Stateless: any number run, on any node.

use mart_schema::FieldErrors;
use mart_schema::user::UserError;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::{ServiceFailure, UserRules, UsersMsg};
use crate::call::{Reply, answer};
use crate::wire::Wire;

#[derive(Debug)]
pub(crate) struct UsersWorker;

impl Actor for UsersWorker {
    type Msg = UsersMsg;
    type State = UserRules;
    type Arguments = UserRules;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        rules: UserRules,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(mart_schema::Service::Users.group(), vec![myself.get_cell()]);
        Ok(rules)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        rules: &mut UserRules,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            UsersMsg::Register(request, reply) => {
                respond(reply, request, |r| rules.register(r)).await
            }
            UsersMsg::IssueToken(request, reply) => {
                respond(reply, request, |c| rules.issue_token(c)).await
            }
            UsersMsg::Get(request, reply) => {
                respond(reply, request, |(caller, id)| rules.get(caller, id)).await
            }
            UsersMsg::List(request, reply) => {
                respond(reply, request, |(caller, page)| rules.list(caller, page)).await
            }
            UsersMsg::Update(request, reply) => {
                respond(reply, request, |(caller, id, patch)| {
                    rules.update(caller, id, patch)
                })
                .await
            }
            UsersMsg::Delete(request, reply) => {
                respond(reply, request, |(caller, id)| rules.delete(caller, id)).await
            }
        }
    }
}

/// Runs one request and answers it. A business "no" is an answer; broken
/// infrastructure drops the reply (the caller sees "unavailable") and crashes
/// this worker so its supervisor starts a fresh one.
async fn respond<Req, T, F>(
    reply: Reply<T, UserError>,
    request: Wire<Req>,
    run: impl FnOnce(Req) -> F,
) -> Result<(), ActorProcessingErr>
where
    F: Future<Output = Result<T, ServiceFailure>>,
{
    let request = match request.into_result() {
        Ok(request) => request,
        Err(reason) => {
            answer(
                reply,
                Err(UserError::Invalid(FieldErrors::single("request", reason))),
            );
            return Ok(());
        }
    };
    match run(request).await {
        Ok(value) => answer(reply, Ok(value)),
        Err(ServiceFailure::Rejected(no)) => answer(reply, Err(no)),
        Err(ServiceFailure::Infrastructure(e)) => {
            drop(reply);
            return Err(e.into());
        }
    }
    Ok(())
}
