//! A request worker of the user service. Stateless: any number run, on any node.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::{UserRules, UsersMsg};
use crate::call::respond;

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
