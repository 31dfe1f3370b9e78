//! `nudge.v1.Management` (proto/nudge/v1/manage.proto): the operators' gRPC
//! API over the same stores as the HTTP admin routes.
//!
//! # Promises
//!
//! * **Admin token.** Every call needs the metadata `authorization: Bearer
//!   <NUDGE_CP_ADMIN_TOKEN>`, checked by [`Authorize`] before any handler
//!   runs and compared in constant time ([`AdminToken::matches`]): missing
//!   or wrong → UNAUTHENTICATED; no token configured → UNAVAILABLE, the
//!   HTTP admin routes' `503 admin_disabled`.
//! * **Bad input changes nothing.** Requests are converted to domain types
//!   and validated before any store is written; a refusal is
//!   INVALID_ARGUMENT whose message starts with the proto field.
//! * **Types and rules** change only through [`crate::catalog`], which keeps
//!   the config file's definitions read-only and puts every accepted change
//!   in force for the engine's next step.
//! * **Notify is an ingested event**, exactly like an agent's notify
//!   envelope (see `notifications`), so dedupe, idempotency keys and
//!   ingest ordering hold for both.
//!
//! | module | RPCs |
//! |---|---|
//! | `catalog` | ListTypes, GetType, PutType, DeleteType; ListRules, GetRule, PutRule, DeleteRule |
//! | `preferences` | GetPreferences, PutPreferences, ResetPreferences |
//! | `devices` | RegisterDevice, ListDevices, SetDeviceActive, DeleteDevice |
//! | `notifications` | Notify, GetNotification, ListUserNotifications, ListDeadLetters, RetryDeadLetter |
//! | `broadcasts` | SubscribeToTopic, UnsubscribeFromTopic, ListTopicSubscribers, ListUserTopics; CreateBroadcast, GetBroadcast, ListBroadcasts, CancelBroadcast |
//!
//! Each module converts its own messages to and from domain types; errors
//! become a `Status` only in `grpc/error.rs`.

mod broadcasts;
mod catalog;
mod devices;
mod notifications;
mod preferences;

use nudge_proto::v1 as pb;
use nudge_proto::v1::management_server::{Management, ManagementServer};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::convert::MAX_ID_BYTES;
use super::{GrpcState, ServiceError};
use crate::channels::ChannelKind;
use crate::config::AdminToken;
use crate::preferences::Frequency;

/// The fully-qualified name health reports for the Management service.
pub const MANAGEMENT_SERVICE_NAME: &str = "nudge.v1.Management";

/// The Management service over the control plane's stores.
pub struct ManagementService {
    state: GrpcState,
}

/// The service behind its token check, ready for `add_service`.
pub(super) fn server(
    state: GrpcState,
) -> InterceptedService<ManagementServer<ManagementService>, Authorize> {
    let authorize = Authorize {
        token: state.admin_token.clone(),
    };
    InterceptedService::new(
        ManagementServer::new(ManagementService { state }),
        authorize,
    )
}

/// Lets a call through only with the right bearer token.
#[derive(Clone)]
pub struct Authorize {
    token: Option<AdminToken>,
}

impl Authorize {
    /// The check of every operator service (`nudge.v1.Analytics` too).
    pub(in crate::grpc) fn new(token: Option<AdminToken>) -> Self {
        Authorize { token }
    }
}

impl Interceptor for Authorize {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        check_token(self.token.as_ref(), presented)?;
        Ok(request)
    }
}

fn check_token(expected: Option<&AdminToken>, header: Option<&str>) -> Result<(), ServiceError> {
    let Some(expected) = expected else {
        return Err(ServiceError::Disabled);
    };
    match header.and_then(|value| value.strip_prefix("Bearer ")) {
        Some(token) if expected.matches(token.trim().as_bytes()) => Ok(()),
        Some(_) => Err(ServiceError::Unauthenticated("the admin token is wrong")),
        None => Err(ServiceError::Unauthenticated(
            "missing metadata `authorization: Bearer <admin token>`",
        )),
    }
}

/// A handler's result as tonic wants it.
fn answer<T>(result: Result<T, ServiceError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl Management for ManagementService {
    async fn list_types(
        &self,
        _request: Request<pb::ListTypesRequest>,
    ) -> Result<Response<pb::ListTypesResponse>, Status> {
        answer(Ok(catalog::list_types(&self.state)))
    }

    async fn get_type(
        &self,
        request: Request<pb::GetTypeRequest>,
    ) -> Result<Response<pb::GetTypeResponse>, Status> {
        answer(catalog::get_type(&self.state, &request.into_inner().name))
    }

    async fn put_type(
        &self,
        request: Request<pb::PutTypeRequest>,
    ) -> Result<Response<pb::PutTypeResponse>, Status> {
        answer(catalog::put_type(&self.state, request.into_inner()).await)
    }

    async fn delete_type(
        &self,
        request: Request<pb::DeleteTypeRequest>,
    ) -> Result<Response<pb::DeleteTypeResponse>, Status> {
        answer(catalog::delete_type(&self.state, request.into_inner()).await)
    }

    async fn list_rules(
        &self,
        _request: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        answer(Ok(catalog::list_rules(&self.state)))
    }

    async fn get_rule(
        &self,
        request: Request<pb::GetRuleRequest>,
    ) -> Result<Response<pb::GetRuleResponse>, Status> {
        answer(catalog::get_rule(&self.state, &request.into_inner().name))
    }

    async fn put_rule(
        &self,
        request: Request<pb::PutRuleRequest>,
    ) -> Result<Response<pb::PutRuleResponse>, Status> {
        answer(catalog::put_rule(&self.state, request.into_inner()).await)
    }

    async fn delete_rule(
        &self,
        request: Request<pb::DeleteRuleRequest>,
    ) -> Result<Response<pb::DeleteRuleResponse>, Status> {
        answer(catalog::delete_rule(&self.state, request.into_inner()).await)
    }

    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> Result<Response<pb::GetPreferencesResponse>, Status> {
        answer(preferences::get(&self.state, request.into_inner()).await)
    }

    async fn put_preferences(
        &self,
        request: Request<pb::PutPreferencesRequest>,
    ) -> Result<Response<pb::PutPreferencesResponse>, Status> {
        answer(preferences::put(&self.state, request.into_inner()).await)
    }

    async fn reset_preferences(
        &self,
        request: Request<pb::ResetPreferencesRequest>,
    ) -> Result<Response<pb::ResetPreferencesResponse>, Status> {
        answer(preferences::reset(&self.state, request.into_inner()).await)
    }

    async fn register_device(
        &self,
        request: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::RegisterDeviceResponse>, Status> {
        answer(devices::register(&self.state, request.into_inner()).await)
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        answer(devices::list(&self.state, request.into_inner()).await)
    }

    async fn set_device_active(
        &self,
        request: Request<pb::SetDeviceActiveRequest>,
    ) -> Result<Response<pb::SetDeviceActiveResponse>, Status> {
        answer(devices::set_active(&self.state, request.into_inner()).await)
    }

    async fn delete_device(
        &self,
        request: Request<pb::DeleteDeviceRequest>,
    ) -> Result<Response<pb::DeleteDeviceResponse>, Status> {
        answer(devices::delete(&self.state, request.into_inner()).await)
    }

    async fn notify(
        &self,
        request: Request<pb::NotifyRequest>,
    ) -> Result<Response<pb::NotifyResponse>, Status> {
        answer(notifications::notify(&self.state, request.into_inner()).await)
    }

    async fn get_notification(
        &self,
        request: Request<pb::GetNotificationRequest>,
    ) -> Result<Response<pb::GetNotificationResponse>, Status> {
        answer(notifications::get(&self.state, request.into_inner()).await)
    }

    async fn list_user_notifications(
        &self,
        request: Request<pb::ListUserNotificationsRequest>,
    ) -> Result<Response<pb::ListUserNotificationsResponse>, Status> {
        answer(notifications::list_for_user(&self.state, request.into_inner()).await)
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        answer(notifications::dead_letters(&self.state, request.into_inner()).await)
    }

    async fn retry_dead_letter(
        &self,
        request: Request<pb::RetryDeadLetterRequest>,
    ) -> Result<Response<pb::RetryDeadLetterResponse>, Status> {
        answer(notifications::retry(&self.state, request.into_inner()).await)
    }

    async fn subscribe_to_topic(
        &self,
        request: Request<pb::SubscribeToTopicRequest>,
    ) -> Result<Response<pb::SubscribeToTopicResponse>, Status> {
        answer(broadcasts::subscribe(&self.state, request.into_inner()).await)
    }

    async fn unsubscribe_from_topic(
        &self,
        request: Request<pb::UnsubscribeFromTopicRequest>,
    ) -> Result<Response<pb::UnsubscribeFromTopicResponse>, Status> {
        answer(broadcasts::unsubscribe(&self.state, request.into_inner()).await)
    }

    async fn list_topic_subscribers(
        &self,
        request: Request<pb::ListTopicSubscribersRequest>,
    ) -> Result<Response<pb::ListTopicSubscribersResponse>, Status> {
        answer(broadcasts::list_subscribers(&self.state, request.into_inner()).await)
    }

    async fn list_user_topics(
        &self,
        request: Request<pb::ListUserTopicsRequest>,
    ) -> Result<Response<pb::ListUserTopicsResponse>, Status> {
        answer(broadcasts::list_user_topics(&self.state, request.into_inner()).await)
    }

    async fn create_broadcast(
        &self,
        request: Request<pb::CreateBroadcastRequest>,
    ) -> Result<Response<pb::CreateBroadcastResponse>, Status> {
        answer(broadcasts::create(&self.state, request.into_inner()).await)
    }

    async fn get_broadcast(
        &self,
        request: Request<pb::GetBroadcastRequest>,
    ) -> Result<Response<pb::GetBroadcastResponse>, Status> {
        answer(broadcasts::get(&self.state, request.into_inner()).await)
    }

    async fn list_broadcasts(
        &self,
        request: Request<pb::ListBroadcastsRequest>,
    ) -> Result<Response<pb::ListBroadcastsResponse>, Status> {
        answer(broadcasts::list(&self.state, request.into_inner()).await)
    }

    async fn cancel_broadcast(
        &self,
        request: Request<pb::CancelBroadcastRequest>,
    ) -> Result<Response<pb::CancelBroadcastResponse>, Status> {
        answer(broadcasts::cancel(&self.state, request.into_inner()).await)
    }
}

// ---------------------------------------------------------------------------
// Helpers the modules share.

/// An id the stores key by: non-empty, at most [`MAX_ID_BYTES`], no NUL.
fn required_id(field: &str, value: String) -> Result<String, ServiceError> {
    if value.is_empty() {
        return Err(ServiceError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(ServiceError::invalid(
            field,
            format!("is longer than {MAX_ID_BYTES} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(ServiceError::invalid(field, "contains a NUL character"));
    }
    Ok(value)
}

fn non_empty(value: String) -> Option<String> {
    if value.is_empty() { None } else { Some(value) }
}

fn channel(field: &str, name: &str) -> Result<ChannelKind, ServiceError> {
    ChannelKind::parse(name).ok_or_else(|| {
        let known: Vec<&str> = ChannelKind::ALL.iter().map(|c| c.as_str()).collect();
        ServiceError::invalid(
            field,
            format!("unknown channel {name:?}; use one of {}", known.join(", ")),
        )
    })
}

/// A proto enum value, refusing numbers the enum does not define.
fn known_enum<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E, ServiceError> {
    E::try_from(value).map_err(|_| ServiceError::invalid(field, format!("unknown value {value}")))
}

/// `None` for unspecified (the caller decides what that means).
fn frequency_from_proto(field: &str, value: i32) -> Result<Option<Frequency>, ServiceError> {
    Ok(match known_enum(field, value)? {
        pb::Frequency::Unspecified => None,
        pb::Frequency::Instant => Some(Frequency::Instant),
        pb::Frequency::Hourly => Some(Frequency::Hourly),
        pb::Frequency::Daily => Some(Frequency::Daily),
        pb::Frequency::Weekly => Some(Frequency::Weekly),
        pb::Frequency::Never => Some(Frequency::Never),
    })
}

fn frequency_to_proto(frequency: Frequency) -> pb::Frequency {
    match frequency {
        Frequency::Instant => pb::Frequency::Instant,
        Frequency::Hourly => pb::Frequency::Hourly,
        Frequency::Daily => pb::Frequency::Daily,
        Frequency::Weekly => pb::Frequency::Weekly,
        Frequency::Never => pb::Frequency::Never,
    }
}

fn priority_from_proto(field: &str, value: i32) -> Result<crate::event::Priority, ServiceError> {
    use crate::event::Priority;
    Ok(match known_enum(field, value)? {
        pb::Priority::Low => Priority::Low,
        pb::Priority::Unspecified | pb::Priority::Normal => Priority::Normal,
        pb::Priority::High => Priority::High,
    })
}

fn priority_to_proto(priority: crate::event::Priority) -> pb::Priority {
    use crate::event::Priority;
    match priority {
        Priority::Low => pb::Priority::Low,
        Priority::Normal => pb::Priority::Normal,
        Priority::High => pb::Priority::High,
    }
}

/// `0` means the default of 100; at most 1000, like the HTTP routes.
fn page_limit(limit: u32) -> Result<usize, ServiceError> {
    const DEFAULT: usize = 100;
    const MAX: usize = 1000;
    match limit as usize {
        0 => Ok(DEFAULT),
        n if n <= MAX => Ok(n),
        _ => Err(ServiceError::invalid(
            "limit",
            format!("must be at most {MAX}"),
        )),
    }
}

fn timestamp(at: jiff::Timestamp) -> Option<prost_types::Timestamp> {
    Some(super::convert::to_proto_timestamp(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_check_mirrors_the_http_admin_routes() {
        let token = AdminToken::from("s3cret");
        assert!(check_token(Some(&token), Some("Bearer s3cret")).is_ok());
        assert!(matches!(
            check_token(Some(&token), Some("Bearer guess")),
            Err(ServiceError::Unauthenticated(_))
        ));
        assert!(matches!(
            check_token(Some(&token), None),
            Err(ServiceError::Unauthenticated(_))
        ));
        assert!(matches!(
            check_token(Some(&token), Some("s3cret")),
            Err(ServiceError::Unauthenticated(_))
        ));
        assert!(matches!(
            check_token(None, Some("Bearer s3cret")),
            Err(ServiceError::Disabled)
        ));
    }

    #[test]
    fn ids_and_limits_are_checked() {
        assert!(required_id("user_id", String::new()).is_err());
        assert!(required_id("user_id", "a\0b".to_owned()).is_err());
        assert_eq!(required_id("user_id", "u1".to_owned()).unwrap(), "u1");
        assert_eq!(page_limit(0).unwrap(), 100);
        assert!(page_limit(1001).is_err());
        let message = channel("channels", "pigeon").unwrap_err().to_string();
        assert!(
            message.starts_with("channels: unknown channel"),
            "{message}"
        );
    }
}
