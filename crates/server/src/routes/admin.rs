//! The admin API, nested under `/admin`: every route needs an operator token
//! (`Authorization: Bearer`), and its handler's `Admin<scope::…>` extractor
//! checks the token's scope before the handler runs. A new admin route is one
//! handler with that extractor plus one line here.
use super::{devices, diagnose, dpop_admin, mls_admin, signing_keys};
use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post};

/// The admin routes, without their `/admin` prefix.
pub fn router() -> Router<AppState> {
    Router::new()
        // Devices (scope devices).
        .route(
            "/devices/{user_id}/{device_id}/revoke",
            post(devices::admin_revoke),
        )
        // The runbook's diagnosis flow (scope diagnose).
        .route("/diagnose/messages/{message_id}", get(diagnose::message))
        .route("/diagnose/users/{user_id}", get(diagnose::user))
        .route("/diagnose/groups/{group_id}", get(diagnose::group))
        // The DPoP replay cache (scope dpop).
        .route(
            "/dpop/jti/{jti}",
            get(dpop_admin::show_jti).delete(dpop_admin::clear_jti),
        )
        // MLS recovery (scope mls).
        .route("/groups/{group_id}", get(mls_admin::show))
        .route(
            "/groups/{group_id}/members/{member_id}/send-update",
            post(mls_admin::send_update),
        )
        .route(
            "/groups/{group_id}/members/{member_id}/rejoin",
            post(mls_admin::rejoin),
        )
        .route("/groups/{group_id}/rollback", post(mls_admin::rollback))
        // Server keys (scope keys).
        .route("/signing-keys", get(signing_keys::list))
        .route("/signing-keys/rotate", post(signing_keys::rotate))
        .route("/signing-keys/{kid}/revoke", post(signing_keys::revoke))
        .route("/token-key/rotate", post(signing_keys::rotate_token_key))
}
