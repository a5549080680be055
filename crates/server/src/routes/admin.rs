//! The admin API, nested under `/admin`: every route needs an operator token
//! (`Authorization: Bearer`), and its handler's `Admin<scope::…>` extractor
//! checks the token's scope before the handler runs. A new admin route is one
//! handler with that extractor plus one line in its module's `admin_router()`.
use super::{
    alerts, audit, devices, diagnose, dpop_admin, emergency, incidents, mls_admin, recovery,
    signing_keys,
};
use crate::state::AppState;
use axum::Router;

/// The admin routes, without their `/admin` prefix.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(alerts::admin_router())
        .merge(audit::admin_router())
        .merge(devices::admin_router())
        .merge(diagnose::admin_router())
        .merge(dpop_admin::admin_router())
        .merge(emergency::admin_router())
        .merge(incidents::admin_router())
        .merge(mls_admin::admin_router())
        .merge(recovery::admin_router())
        .merge(signing_keys::admin_router())
}
