"""``/v1/security/users``: SCRAM users, as Redpanda's admin API manages them (issue 18).

A password given here is turned into a credential in this process (a random salt, 4096 iterations: kafka-configs'
default) and only the credential is proposed (``UpsertScramCredential``): the password is not logged, not stored,
not in any error message. Listing shows names and mechanisms, never a salt or a key. Kafka clients manage the same
users with AlterUserScramCredentials and DescribeUserScramCredentials. ``/v1/security/acls`` comes with the ACLs.
"""

from __future__ import annotations

from aiohttp import web

from rafka_shards.admin import requests as req
from rafka_shards.admin.http import json_response
from rafka_shards.admin.routes import AdminContext, Route
from rafka_shards.security.scram_users import credentials_by_user


def _username(request: web.Request) -> str:
    return req.parse_username("username", request.match_info["username"])


async def users(ctx: AdminContext, _request: web.Request) -> web.Response:
    return json_response(
        [
            {"username": user, "mechanisms": [r.mechanism for r in records]}
            for user, records in credentials_by_user(ctx.image).items()
        ]
    )


async def create_user(ctx: AdminContext, request: web.Request) -> web.Response:
    body = req.parse_new_user(await request.read())
    await ctx.cluster.create_user(body)
    return json_response({"username": body.username, "algorithm": body.algorithm}, status=201)


async def update_user(ctx: AdminContext, request: web.Request) -> web.Response:
    username = _username(request)
    body = req.parse_user_update(await request.read(), username)
    await ctx.cluster.update_user(body)
    return json_response({"username": username, "algorithm": body.algorithm})


async def delete_user(ctx: AdminContext, request: web.Request) -> web.Response:
    username = _username(request)
    await ctx.cluster.delete_user(username)
    return json_response({"deleted": username})


ROUTES = (
    Route("GET", "/v1/security/users", users, "every SCRAM user with its mechanisms (never a key)"),
    Route(
        "POST",
        "/v1/security/users",
        create_user,
        "create a SCRAM user (201; 409 if it exists); the password becomes a salted credential here",
        '{"username": "alice", "password": "change me", "algorithm": "SCRAM-SHA-256"}',
        status=201,
    ),
    Route(
        "PUT",
        "/v1/security/users/{username}",
        update_user,
        "a new password for a user: its credential for this algorithm replaced, those of other mechanisms deleted",
        '{"password": "new secret", "algorithm": "SCRAM-SHA-512"}',
    ),
    Route("DELETE", "/v1/security/users/{username}", delete_user, "delete a user (every mechanism; 404 if none)"),
)
