//! The notification service's group member: reads of the log.

use mart_schema::notification::{Notification, NotificationError, NotificationStatus};
use mart_schema::page::Checked;
use mart_schema::user::Caller;
use mart_schema::{NotificationId, Page, PageRequest, Service};

use super::store::NotificationStore;
use super::{NotificationListing, NotificationsMsg};
use crate::call::{Serve, answer_in_task};
use crate::failure::Failure;

type Outcome<T> = Result<T, Failure<NotificationError>>;

#[derive(Clone, Debug)]
pub(crate) struct NotificationService {
    store: NotificationStore,
}

impl Serve for NotificationService {
    type Msg = NotificationsMsg;
    const SERVICE: Service = Service::Notifications;

    fn serve(&self, msg: NotificationsMsg) {
        let s = self.clone();
        match msg {
            NotificationsMsg::List(request, reply) => {
                answer_in_task(reply, request, move |caller, listing| async move {
                    s.list(caller, listing).await
                })
            }
            NotificationsMsg::Get(request, reply) => {
                answer_in_task(reply, request, move |caller, id| async move {
                    s.get(caller, id).await
                })
            }
        }
    }
}

impl NotificationService {
    pub(crate) fn new(store: NotificationStore) -> Self {
        Self { store }
    }

    async fn list(
        &self,
        caller: Caller,
        listing: NotificationListing,
    ) -> Outcome<Page<Notification>> {
        let NotificationListing { query, mine_only } = listing;
        let user = match caller.user_id() {
            Some(me) if mine_only => Some(me),
            _ if caller.is_staff() => query.user_id,
            _ => return Err(NotificationError::Forbidden.into()),
        };
        let page = PageRequest {
            limit: query.limit,
            cursor: query.cursor.clone(),
        };
        let checked = page.checked::<NotificationId, NotificationStatus>(query.status.as_deref());
        let Checked {
            limit,
            after,
            status,
        } = checked.map_err(NotificationError::Invalid)?;
        let items = self
            .store
            .list(user, status, after, PageRequest::overfetch(limit))
            .await?;
        Ok(Page::from_overfetch(items, limit, |n| n.id.to_string()))
    }

    async fn get(&self, caller: Caller, id: NotificationId) -> Outcome<Notification> {
        caller.staff_or(NotificationError::Forbidden)?;
        self.store
            .get(id)
            .await?
            .ok_or(Failure::Rejected(NotificationError::NotFound))
    }
}
