//! `ApiError`: the one place where every failure becomes an HTTP status, a
//! stable error code and a JSON body (plus the RFC 9449 headers for auth errors).
use atlas_proto::{ErrorBody, ErrorCode};
use atlas_store::StoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    description: String,
    details: Option<serde_json::Value>,
    www_authenticate: Option<&'static str>,
    nonce: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and description.
    pub fn new(status: StatusCode, code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            details: None,
            www_authenticate: None,
            nonce: None,
            retry_after: None,
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            description,
        )
    }

    /// 413 `payload_too_large`.
    pub fn too_large(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            description,
        )
    }

    /// 401 with a `WWW-Authenticate: DPoP …` challenge (RFC 9449 §7.1).
    pub fn unauthorized(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            www_authenticate: Some("DPoP"),
            ..Self::new(StatusCode::UNAUTHORIZED, code, description)
        }
    }

    /// 401 with a `WWW-Authenticate: Bearer …` challenge (RFC 6750, operator routes).
    pub fn bearer_challenge(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            www_authenticate: Some("Bearer"),
            ..Self::new(StatusCode::UNAUTHORIZED, code, description)
        }
    }

    /// 500 `internal`; the cause is logged, not shown to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal server error",
        )
    }

    /// A stored identifier in its wire type. Rows are checked on the way in,
    /// so one that fails its check now is corruption: a 500, logged.
    pub fn stored_id<T>(value: impl Into<String>) -> Result<T, ApiError>
    where
        T: TryFrom<String, Error = atlas_proto::IdError>,
    {
        let value = value.into();
        T::try_from(value.clone())
            .map_err(|e| Self::internal(format_args!("stored id {value:?}: {e}")))
    }

    /// [`ApiError::stored_id`] of a nullable column.
    pub fn stored_opt_id<T>(value: Option<impl Into<String>>) -> Result<Option<T>, ApiError>
    where
        T: TryFrom<String, Error = atlas_proto::IdError>,
    {
        value.map(Self::stored_id).transpose()
    }

    /// Attaches structured details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 429 `rate_limited` with `Retry-After` (seconds).
    pub fn rate_limited(description: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                description,
            )
        }
    }

    /// 503 `unavailable` with `Retry-After` (seconds): a dependency is down.
    pub fn unavailable(description: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                description,
            )
        }
    }

    /// Attaches a fresh `DPoP-Nonce` header.
    pub fn with_nonce(mut self, nonce: String) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use ErrorCode as C;
        use StatusCode as S;
        match e {
            StoreError::UserExists => Self::new(S::CONFLICT, C::UserExists, "user already exists"),
            StoreError::DeviceExists => {
                Self::new(S::CONFLICT, C::DeviceExists, "device already exists")
            }
            StoreError::UnknownUser => Self::new(S::NOT_FOUND, C::UnknownUser, "unknown user"),
            StoreError::UnknownDevice => {
                Self::new(S::NOT_FOUND, C::UnknownDevice, "unknown device")
            }
            StoreError::InvalidLinkToken => Self::new(
                S::FORBIDDEN,
                C::InvalidLinkToken,
                "link token is unknown, used or expired",
            ),
            StoreError::DeviceListMismatch(m) => Self::new(
                S::CONFLICT,
                C::DeviceListMismatch,
                "envelopes do not match the recipient's current devices",
            )
            .with_details(serde_json::to_value(m).unwrap_or_default()),
            StoreError::IdempotencyConflict => Self::new(
                S::CONFLICT,
                C::IdempotencyConflict,
                "client_message_id was already used for a different message",
            ),
            StoreError::GroupExists => {
                Self::new(S::CONFLICT, C::GroupExists, "group already exists")
            }
            StoreError::BackupExists => {
                Self::new(S::CONFLICT, C::BackupExists, "a backup with this id exists")
            }
            StoreError::UnknownGroup => Self::new(S::NOT_FOUND, C::UnknownGroup, "unknown group"),
            StoreError::NotAGroupMember => {
                Self::new(S::FORBIDDEN, C::NotAMember, "not a member of the group")
            }
            StoreError::QueueFull(device) => Self {
                retry_after: Some(60),
                ..Self::new(
                    S::TOO_MANY_REQUESTS,
                    C::QueueFull,
                    format!(
                        "device {device} holds the most undelivered messages it may; retry later"
                    ),
                )
            },
            StoreError::NotAProbe => Self::new(
                S::NOT_FOUND,
                C::UnknownUser,
                "no reserved recovery probe has this user id",
            ),
            StoreError::ProbeNotIsolated(why) => Self::new(
                S::CONFLICT,
                C::ProbeNotIsolated,
                format!("the probe is left alone, erasing it would touch others' data: {why}"),
            ),
            StoreError::TooManyProbes(most) => Self::new(
                S::TOO_MANY_REQUESTS,
                C::TooManyProbes,
                format!(
                    "{most} recovery probes are reserved already: erase them \
                     (GET /admin/recovery/probes lists them)"
                ),
            ),
            StoreError::Replay => Self::unauthorized(
                C::InvalidDpopProof,
                "Invalid DPoP proof: jti was already used (replay)",
            ),
            e @ (StoreError::Database(_) | StoreError::Sqlite(_)) => {
                tracing::error!(error = %e, "database error");
                Self::new(
                    S::SERVICE_UNAVAILABLE,
                    C::Unavailable,
                    "storage unavailable, retry later",
                )
            }
            e @ (StoreError::Corrupt(_)
            | StoreError::SchemaTooNew { .. }
            | StoreError::Unsupported(_)) => Self::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            error_description: self.description.clone(),
            details: self.details,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        // The request counter reads it: failed authentications are counted by reason.
        response.extensions_mut().insert(self.code);
        let headers = response.headers_mut();
        if let Some(scheme) = self.www_authenticate {
            let algs = if scheme == "DPoP" {
                ", algs=\"EdDSA ES256\""
            } else {
                ""
            };
            let challenge = format!(
                "{scheme} error=\"{}\", error_description=\"{}\"{algs}",
                self.code.as_str(),
                self.description.replace('"', "'")
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        if let Some(nonce) = self.nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            headers.insert("dpop-nonce", nonce);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
