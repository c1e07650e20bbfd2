//! Bearer tokens for the gRPC APIs: HS256-signed JWTs carrying a role and the fund code or
//! agent id. A wrong or missing token is `UNAUTHENTICATED`; a call outside the token's scope is
//! `PERMISSION_DENIED`.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tonic::{Request, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A fund's system: its own campaigns and results only (`fund` claim).
    Fund,
    /// A call-centre agent: the campaigns assigned to it (`agent` claim).
    Agent,
    /// Sees and steers every campaign.
    Supervisor,
    /// Manages agents and reference data.
    Admin,
    /// Another CNMAS service (e.g. the dialer fetching a call card from intake).
    Service,
    /// The data-protection officer's audits: who saw what.
    Auditor,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fund" => Ok(Role::Fund),
            "agent" => Ok(Role::Agent),
            "supervisor" => Ok(Role::Supervisor),
            "admin" => Ok(Role::Admin),
            "service" => Ok(Role::Service),
            "auditor" => Ok(Role::Auditor),
            _ => Err("role must be fund, agent, supervisor, admin, auditor or service".into()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fund: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

/// Who is calling, once the token is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    pub fund: Option<String>,
    pub agent: Option<String>,
}

impl Principal {
    pub fn require(&self, roles: &[Role]) -> Result<(), Status> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "role {:?} may not call this method",
                self.role
            )))
        }
    }

    /// Funds see only their own data; supervisors, admins and services see every fund's.
    pub fn may_see_fund(&self, fund: &str) -> bool {
        match self.role {
            Role::Fund => self.fund.as_deref() == Some(fund),
            Role::Supervisor | Role::Admin | Role::Service => true,
            Role::Agent | Role::Auditor => false,
        }
    }

    pub fn agent_id(&self) -> Result<&str, Status> {
        match (self.role, self.agent.as_deref()) {
            (Role::Agent, Some(a)) => Ok(a),
            _ => Err(Status::permission_denied("an agent token is required")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is invalid or expired")]
    Invalid,
    #[error("a fund token needs a 3-digit fund claim; an agent token an agent claim")]
    MissingScope,
}

/// Signs and verifies tokens with the shared HMAC key.
#[derive(Clone)]
pub struct Authenticator {
    encoding: Arc<EncodingKey>,
    decoding: Arc<DecodingKey>,
}

impl Authenticator {
    pub fn new(secret: &str) -> Self {
        Authenticator {
            encoding: Arc::new(EncodingKey::from_secret(secret.as_bytes())),
            decoding: Arc::new(DecodingKey::from_secret(secret.as_bytes())),
        }
    }

    /// Issues a token valid for `ttl`.
    pub fn issue(
        &self,
        role: Role,
        subject: &str,
        fund: Option<&str>,
        agent: Option<&str>,
        ttl: chrono::Duration,
    ) -> Result<String, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: subject.to_string(),
            role,
            fund: fund.map(str::to_string),
            agent: agent.map(str::to_string),
            iat: now,
            exp: now + ttl.num_seconds(),
        };
        check_scope(&claims)?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| TokenError::Invalid)
    }

    /// `message` as a request of `service` to another service, under a `service` token valid
    /// for two minutes.
    pub fn service_request<T>(&self, service: &str, message: T) -> Result<Request<T>, Status> {
        let token = self
            .issue(
                Role::Service,
                service,
                None,
                None,
                chrono::Duration::minutes(2),
            )
            .map_err(|_| Status::internal("cannot mint a token"))?;
        bearer(Request::new(message), &token)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| TokenError::Invalid)?;
        let c = data.claims;
        check_scope(&c)?;
        Ok(Principal {
            subject: c.sub,
            role: c.role,
            fund: c.fund,
            agent: c.agent,
        })
    }

    /// A tonic interceptor that rejects calls without a valid bearer token and stores the
    /// [`Principal`] in the request's extensions.
    pub fn interceptor(
        &self,
    ) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
        let auth = self.clone();
        move |mut req: Request<()>| {
            let token = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
            let principal = auth
                .verify(token.trim())
                .map_err(|e| Status::unauthenticated(e.to_string()))?;
            req.extensions_mut().insert(principal);
            Ok(req)
        }
    }
}

fn check_scope(c: &Claims) -> Result<(), TokenError> {
    let fund_ok = c
        .fund
        .as_deref()
        .is_some_and(|f| f.len() == 3 && f.bytes().all(|b| b.is_ascii_digit()));
    match c.role {
        Role::Fund if !fund_ok => Err(TokenError::MissingScope),
        Role::Agent if c.agent.as_deref().is_none_or(str::is_empty) => {
            Err(TokenError::MissingScope)
        }
        _ => Ok(()),
    }
}

/// The verified caller of a request that went through [`Authenticator::interceptor`].
pub fn principal<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("a bearer token is required"))
}

/// Adds a bearer token to outgoing requests (clients of other services, the CLI).
pub fn bearer<T>(mut req: Request<T>, token: &str) -> Result<Request<T>, Status> {
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| Status::invalid_argument("token is not a valid header value"))?;
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

/// A client interceptor adding a bearer token to every call (other services, the CLI, tests).
#[derive(Clone)]
pub struct Bearer(pub String);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        bearer(req, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_carry_scope() {
        let auth = Authenticator::new("0123456789abcdef0123456789abcdef");
        let t = auth
            .issue(
                Role::Fund,
                "cpam-751",
                Some("751"),
                None,
                chrono::Duration::hours(1),
            )
            .unwrap();
        let p = auth.verify(&t).unwrap();
        assert_eq!(p.role, Role::Fund);
        assert!(p.may_see_fund("751"));
        assert!(!p.may_see_fund("971"));
        assert!(p.agent_id().is_err());
    }

    #[test]
    fn bad_tokens_are_refused() {
        let auth = Authenticator::new("0123456789abcdef0123456789abcdef");
        let other = Authenticator::new("another-secret-another-secret-xx");
        let t = other
            .issue(Role::Admin, "x", None, None, chrono::Duration::hours(1))
            .unwrap();
        assert!(auth.verify(&t).is_err());
        let expired = auth
            .issue(Role::Admin, "x", None, None, chrono::Duration::hours(-1))
            .unwrap();
        assert!(auth.verify(&expired).is_err());
        assert!(auth.verify("not.a.token").is_err());
        assert!(auth
            .issue(
                Role::Fund,
                "x",
                Some("75"),
                None,
                chrono::Duration::hours(1)
            )
            .is_err());
        assert!(auth
            .issue(Role::Agent, "x", None, None, chrono::Duration::hours(1))
            .is_err());
    }
}
