"""``/v1/security/users`` (SCRAM users) and ``/v1/security/acls`` (ACLs), as Redpanda's admin API manages them
(issue 18).

A password given here is turned into a credential in this process (a random salt, 4096 iterations: kafka-configs'
default) and only the credential is proposed (``UpsertScramCredential``): the password is not logged, not stored,
not in any error message. Listing shows names and mechanisms, never a salt or a key. Kafka clients manage the same
users with AlterUserScramCredentials and DescribeUserScramCredentials.

ACLs are Kafka's bindings (``controller.acls``) as JSON objects, enums by name (case-insensitive):
``{"resource_type": "TOPIC", "resource_name": "orders", "pattern_type": "LITERAL", "principal": "User:alice",
"host": "*", "operation": "READ", "permission": "ALLOW"}``. GET lists those a filter selects (query parameters of
the same names, each optional, ANY allowed; Kafka's DescribeAcls semantics, MATCH included); POST creates one
binding or an array of them in one ``CreateAcls`` command; DELETE removes those a filter selects (a JSON object body,
or the query) and answers them: a filter with no field at all is refused, ``resource_type=ANY`` deletes every ACL.
With ``admin_api_require_auth`` the changes need a superuser (``rafka_shards.admin.auth``).
"""

from __future__ import annotations

from aiohttp import web

from controller.acls import AclBinding, bindings_to_json
from rafka_shards.admin import requests as req
from rafka_shards.admin.http import json_response
from rafka_shards.admin.requests import BadRequest
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


def _query_filter(request: web.Request) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in request.query.items():
        if key in fields:
            raise BadRequest(key, f"{key}: given twice")
        fields[key] = value
    return fields


async def acls(ctx: AdminContext, request: web.Request) -> web.Response:
    acl_filter = req.parse_acl_filter(_query_filter(request))
    return json_response(bindings_to_json(ctx.image.acls.acls(acl_filter)))


async def create_acls(ctx: AdminContext, request: web.Request) -> web.Response:
    bindings = req.parse_acl_bindings(await request.read())
    await ctx.cluster.create_acls(bindings)
    return json_response({"created": bindings_to_json(bindings)}, status=201)


async def delete_acls(ctx: AdminContext, request: web.Request) -> web.Response:
    body = req.parse_acl_filter_body(await request.read())
    query = _query_filter(request)
    if body is not None and query:
        raise BadRequest(None, "give the filter in the body or in the query, not both")
    fields = query if body is None else body
    if not fields:
        raise BadRequest(None, "a filter is required (resource_type=ANY selects every ACL)")
    deleted: tuple[AclBinding, ...] = await ctx.cluster.delete_acls(req.parse_acl_filter(fields))
    return json_response({"deleted": bindings_to_json(deleted)})


ACL_EXAMPLE = (
    '{"resource_type": "TOPIC", "resource_name": "orders", "pattern_type": "LITERAL", "principal": "User:alice", '
    '"host": "*", "operation": "READ", "permission": "ALLOW"}'
)

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
    Route(
        "GET",
        "/v1/security/acls",
        acls,
        "the ACLs a filter selects (query: resource_type, resource_name, pattern_type, principal, host, operation, "
        "permission; each optional)",
    ),
    Route(
        "POST",
        "/v1/security/acls",
        create_acls,
        "create one ACL (an object) or several (an array); 201 with the ACLs created",
        ACL_EXAMPLE,
        status=201,
    ),
    Route(
        "DELETE",
        "/v1/security/acls",
        delete_acls,
        "delete the ACLs a filter selects (a JSON object body or the query; at least one field) and list them",
        '{"resource_type": "TOPIC", "resource_name": "orders", "principal": "User:alice"}',
    ),
)
