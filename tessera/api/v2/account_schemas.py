"""Wire types of the accounts sections (Authentication, Account, Users, User Groups, email
settings), field for field as the UCM seed writes them."""

from pydantic import Field

from tessera.api.v2.schemas import Port, RowId, Strict

Code = Field(min_length=1, max_length=64)
Password = Field(min_length=1, max_length=1024)


class LoginSecondFactor(Strict):
    """Beyond the seed: the second step of a password login when TOTP is on."""

    pending_token: str = Field(min_length=1, max_length=200)
    code: str = Code


class ForgotPassword(Strict):
    email: str = Field(min_length=1, max_length=254)


class ResetPassword(Strict):
    token: str = Field(min_length=1, max_length=200)
    password: str = Password


class UpdateProfile(Strict):
    full_name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=254)
    # Beyond the seed: asked for only when `email` changes the address (reset links go there).
    current_password: str | None = Field(None, max_length=1024)


class ChangePassword(Strict):
    current_password: str = Password
    new_password: str = Password


class TotpCode(Strict):
    code: str = Code


class ToggleUser(Strict):
    active: bool | None = None


class AdminResetPassword(Strict):
    new_password: str | None = Field(None, min_length=1, max_length=1024)


class ImportedUser(Strict):
    username: str = Field(min_length=1, max_length=150)
    email: str | None = Field(None, max_length=254)
    role: str = "viewer"
    full_name: str | None = Field(None, max_length=200)
    password: str | None = Field(None, min_length=1, max_length=1024)


class ImportUsers(Strict):
    users: list[ImportedUser] = Field(min_length=1, max_length=500)
    send_invites: bool = False


class GroupBody(Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    permissions: list[str] = Field(default_factory=list, max_length=100)


class UpdateGroup(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    permissions: list[str] | None = Field(None, max_length=100)


class AddMember(Strict):
    user_id: RowId
    role: str = Field("member", max_length=16)


class EmailSettings(Strict):
    enabled: bool | None = None
    smtp_host: str | None = Field(None, max_length=253)
    smtp_port: Port | None = None
    smtp_user: str | None = Field(None, max_length=254)
    smtp_password: str | None = Field(None, max_length=512)
    smtp_tls: bool | None = None
    from_address: str | None = Field(None, max_length=254)


class TestEmail(Strict):
    to: str = Field(min_length=3, max_length=254)
