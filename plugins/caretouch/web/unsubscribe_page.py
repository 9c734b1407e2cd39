"""The page an unsubscribe link opens, in the customer's language (zh-CN when unknown).

It asks (with a button that POSTs) or confirms; the template is ``templates/unsubscribe.html``.
"""

from __future__ import annotations

from functools import cache

from fastapi.responses import HTMLResponse
from jinja2 import Template

from .pages import environment

DEFAULT_LOCALE = "zh-CN"
PAGE_TEXT = {
    "zh-CN": {
        "title": "退订",
        "email": "确定不再接收我们的邮件吗？",
        "marketing": "确定不再接收我们的推广邮件吗？",
        "button": "确认退订",
        "done_email": "您已退订，我们不会再给您发送邮件。",
        "done_marketing": "您已退订，我们不会再给您发送推广邮件。",
        "invalid": "此退订链接无效。",
    },
    "zh-TW": {
        "title": "取消訂閱",
        "email": "確定不再接收我們的郵件嗎？",
        "marketing": "確定不再接收我們的推廣郵件嗎？",
        "button": "確認取消訂閱",
        "done_email": "您已取消訂閱，我們不會再寄送郵件給您。",
        "done_marketing": "您已取消訂閱，我們不會再寄送推廣郵件給您。",
        "invalid": "此取消訂閱連結無效。",
    },
    "en": {
        "title": "Unsubscribe",
        "email": "Stop receiving our emails?",
        "marketing": "Stop receiving our marketing emails?",
        "button": "Unsubscribe",
        "done_email": "You are unsubscribed: we will not email you again.",
        "done_marketing": "You are unsubscribed: we will not send you marketing emails again.",
        "invalid": "This unsubscribe link is not valid.",
    },
}


@cache
def _template() -> Template:
    return environment().get_template("unsubscribe.html")


def unsubscribe_page(
    locale: str, key: str, *, form_action: str | None = None, status: int = 200
) -> HTMLResponse:
    """The page saying ``PAGE_TEXT[locale][key]``; with ``form_action``, the button too."""
    lang = locale if locale in PAGE_TEXT else DEFAULT_LOCALE
    text = PAGE_TEXT[lang]
    html = _template().render(lang=lang, text=text, message=text[key], form_action=form_action)
    return HTMLResponse(html, status_code=status)
