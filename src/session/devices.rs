//! The logged-in user's other sessions: list them, end one, end all but this one.

use super::{Session, SessionError};
use crate::admin::{self, SessionInfo};
use crate::id::{Fingerprint, SessionKey};

impl Session {
    // ----- the user's other sessions -----

    fn user(&self) -> Result<(String, Option<SessionKey>), SessionError> {
        let st = self.state();
        let live = st.current.as_ref().ok_or(SessionError::NotAuthenticated)?;
        let identity = live
            .record
            .identity
            .as_ref()
            .ok_or(SessionError::NotAuthenticated)?;
        Ok((identity.user_id.clone(), Some(live.key)))
    }

    /// The logged-in user's live sessions on every device, oldest first, with this one marked
    /// `current` (OWASP ASVS 3.3.4).
    ///
    /// # Errors
    ///
    /// [`SessionError::NotAuthenticated`] without a logged-in user; store errors.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, SessionError> {
        let (user_id, current) = self.user()?;
        let env = self.env();
        let list = admin::list(self.store(), env, &user_id, current).await?;
        Ok(list.into_iter().map(|(_, info)| info).collect())
    }

    /// Ends one of the user's other sessions, named by its fingerprint (from
    /// [`sessions`](Self::sessions)). Returns whether it was live. Revoking the current
    /// session is [`logout`](Self::logout).
    ///
    /// # Errors
    ///
    /// [`SessionError::NotAuthenticated`] without a logged-in user; store errors.
    pub async fn revoke(&self, id: Fingerprint) -> Result<bool, SessionError> {
        let (user_id, current) = self.user()?;
        if current.map(|k| k.fingerprint()) == Some(id) {
            self.logout().await?;
            return Ok(true);
        }
        let env = self.env();
        let n = admin::revoke(self.store(), env, &user_id, |s| s.id == id, "user").await?;
        Ok(n > 0)
    }

    /// "Log out my other devices": ends every session of the user but this one. Returns how
    /// many were ended.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotAuthenticated`] without a logged-in user; store errors.
    pub async fn revoke_others(&self) -> Result<usize, SessionError> {
        let (user_id, current) = self.user()?;
        let current = current.map(|k| k.fingerprint());
        let env = self.env();
        let n = admin::revoke(
            self.store(),
            env,
            &user_id,
            |s| Some(s.id) != current,
            "user",
        )
        .await?;
        Ok(n)
    }
}
