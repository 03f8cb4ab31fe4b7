"""Server names compare trimmed and case-insensitively (PROTOCOL §9 "Identity of accounts"): one
account per (login, server name so compared). Existing names are trimmed first; two accounts that
only differed by spaces or case cannot both stay, and the migration stops naming them."""

import django.db.models.functions.text
from django.db import migrations, models


def trim_server_names(apps, schema_editor):
    TradingAccount = apps.get_model("policies", "TradingAccount")
    seen: dict[tuple[int, str], str] = {}
    clashes = []
    for account in TradingAccount.objects.order_by("pk").only("pk", "login", "server", "tenant_id"):
        key = (account.login, account.server.strip().lower())
        if key in seen:
            clashes.append(f"{account.login}@{account.server!r} and {account.login}@{seen[key]!r}")
        seen[key] = account.server
        if account.server != account.server.strip():
            TradingAccount.objects.filter(pk=account.pk).update(server=account.server.strip())
    if clashes:
        raise RuntimeError(
            "These accounts differ only by the spaces or case of their server name, which now name one "
            "account; merge or delete one of each pair first: " + "; ".join(clashes[:20])
        )


class Migration(migrations.Migration):
    dependencies = [
        ("policies", "0009_rules_v2_state_and_explanation"),
        ("tenancy", "0001_initial"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="tradingaccount",
            name="account_server_login_unique",
        ),
        migrations.RunPython(trim_server_names, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="tradingaccount",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower(django.db.models.functions.text.Trim("server")),
                models.F("login"),
                name="account_server_key_login_unique",
            ),
        ),
    ]
