"""Simplified Chinese and English. Follows the system locale unless ``ui.language`` fixes it;
the agent can switch at run time.

A small Python table is enough for a window of this size; :func:`tr` falls back to English and
then to the key, so a missing translation is visible but never fatal.
"""

from __future__ import annotations

import locale
import os
from collections.abc import Callable

LANGUAGES = {"zh_CN": "中文", "en": "English"}

TABLE: dict[str, dict[str, str]] = {
    "app_title": {"en": "DualRec Station", "zh_CN": "双录工作站"},
    "state_idle": {"en": "NOT RECORDING", "zh_CN": "未在录制"},
    "state_idle_hint": {"en": "Start a recording before the call.", "zh_CN": "通话前请先开始录制。"},
    "state_consent": {"en": "Recording · consent pending", "zh_CN": "录制中 · 等待客户同意"},
    "state_consent_hint": {"en": "Read the notice out, then record the customer's answer.",
                           "zh_CN": "请宣读告知内容，并记录客户的答复。"},
    "state_recording": {"en": "Recording {elapsed}", "zh_CN": "录制中 {elapsed}"},
    "state_recording_hint": {"en": "All is well.", "zh_CN": "一切正常。"},
    "state_recording_warn_hint": {"en": "Recording, but check the warning below.",
                                  "zh_CN": "正在录制，但请查看下方的警告。"},
    "state_paused": {"en": "PAUSED: {reason}", "zh_CN": "已暂停：{reason}"},
    "state_paused_hint": {"en": "The screen is masked. Resume as soon as you can.",
                          "zh_CN": "屏幕已遮盖，请尽快继续录制。"},
    "state_stopped": {"en": "NOT RECORDING · last session {code}",
                      "zh_CN": "未在录制 · 上次会话{code}"},
    "state_stopped_error": {"en": "RECORDING STOPPED: {code}", "zh_CN": "录制已中断：{code}"},
    "state_stopped_error_hint": {"en": "{error} Start a new recording.",
                                 "zh_CN": "{error} 请重新开始录制。"},
    "code_normal": {"en": "ended normally", "zh_CN": "正常结束"},
    "code_device-lost": {"en": "device lost", "zh_CN": "设备丢失"},
    "code_disk-full": {"en": "disk full", "zh_CN": "磁盘已满"},
    "code_encoder-error": {"en": "encoder error", "zh_CN": "编码错误"},
    "code_write-error": {"en": "disk write error", "zh_CN": "磁盘写入错误"},
    "code_crash-recovered": {"en": "recovered after a crash", "zh_CN": "崩溃后恢复"},
    "code_consent-refused": {"en": "customer refused", "zh_CN": "客户拒绝"},
    "btn_start": {"en": "Start recording", "zh_CN": "开始录制"},
    "btn_pause": {"en": "Pause", "zh_CN": "暂停"},
    "btn_resume": {"en": "Resume", "zh_CN": "继续"},
    "btn_stop": {"en": "Stop", "zh_CN": "停止"},
    "btn_agree": {"en": "Customer agreed", "zh_CN": "客户同意"},
    "btn_refuse": {"en": "Customer refused", "zh_CN": "客户拒绝"},
    "pause_reason": {"en": "Reason for the pause (required)", "zh_CN": "暂停原因（必填）"},
    "reason_required": {"en": "Enter a reason to pause.", "zh_CN": "请填写暂停原因。"},
    "consent_title": {"en": "Read out to the customer", "zh_CN": "请向客户宣读"},
    "steps_title": {"en": "Script steps", "zh_CN": "话术步骤"},
    "session_title": {"en": "Session", "zh_CN": "会话"},
    "health_title": {"en": "Devices", "zh_CN": "设备"},
    "customer": {"en": "Customer", "zh_CN": "客户"},
    "business_ref": {"en": "Business ref.", "zh_CN": "业务编号"},
    "agent": {"en": "Agent", "zh_CN": "坐席"},
    "session_id": {"en": "Session", "zh_CN": "会话编号"},
    "screen": {"en": "Screen", "zh_CN": "屏幕"},
    "camera": {"en": "Camera", "zh_CN": "摄像头"},
    "microphone": {"en": "Microphone", "zh_CN": "麦克风"},
    "disk_free": {"en": "Disk free", "zh_CN": "磁盘剩余"},
    "upload_backlog": {"en": "Upload backlog", "zh_CN": "待上传"},
    "backlog_held": {"en": "{n} session(s) held back, tell IT", "zh_CN": "{n} 个会话被扣留，请联系 IT"},
    "backlog_held_one": {"en": "Held back, not uploaded: {session}: {reason}",
                         "zh_CN": "已扣留、未上传：{session}：{reason}"},
    "backlog_error": {"en": "Upload is failing: {error}", "zh_CN": "上传失败：{error}"},
    "no_preview": {"en": "no camera image", "zh_CN": "无摄像头画面"},
    "language": {"en": "Language", "zh_CN": "语言"},
    "warnings_none": {"en": "", "zh_CN": ""},
    "warn_no_face": {"en": "No face on camera", "zh_CN": "摄像头前无人脸"},
    "warn_camera_black": {"en": "Camera covered or black", "zh_CN": "摄像头被遮挡或黑屏"},
    "warn_mic_silent": {"en": "Microphone silent", "zh_CN": "麦克风无声音"},
    "warn_device_lost": {"en": "A device stopped responding", "zh_CN": "设备无响应"},
    "notify_stopped_title": {"en": "Recording stopped", "zh_CN": "录制已中断"},
    "notify_stopped_body": {"en": "Recording stopped unexpectedly: {code}. {error}",
                            "zh_CN": "录制意外中断：{code}。{error}"},
    "tray_show": {"en": "Show window", "zh_CN": "显示窗口"},
    "step_identity_shown": {"en": "Identity shown", "zh_CN": "已出示身份"},
    "step_risk_disclosure_read": {"en": "Risk disclosure read", "zh_CN": "已宣读风险揭示"},
    "step_terms_explained": {"en": "Terms explained", "zh_CN": "已解释条款"},
    "step_customer_confirmed": {"en": "Customer confirmed", "zh_CN": "客户已确认"},
    "error_title": {"en": "Not possible", "zh_CN": "无法执行"},
    "close_while_recording": {"en": "Recording goes on: stop it before closing the window.",
                              "zh_CN": "录制仍在进行：请先停止录制再关闭窗口。"},
}


def system_language() -> str:
    """zh_CN when the system locale is Chinese, else English."""
    for var in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        value = os.environ.get(var)
        if value:
            return "zh_CN" if value.lower().startswith("zh") else "en"
    try:
        loc = locale.getlocale()[0] or ""
    except ValueError:
        loc = ""
    return "zh_CN" if loc.lower().startswith("zh") else "en"


class Translator:
    """The current language and the table; listeners re-translate their widgets on change."""

    def __init__(self, language: str = "auto") -> None:
        self.language = system_language() if language == "auto" else language
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def set_language(self, language: str) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"unknown language {language!r}; known: {', '.join(LANGUAGES)}")
        if language != self.language:
            self.language = language
            for fn in list(self._listeners):
                fn()

    def __call__(self, key: str, **kw: object) -> str:
        entry = TABLE.get(key)
        if entry is None:
            text = key.removeprefix("step_").replace("_", " ") if key.startswith("step_") else key
        else:
            text = entry.get(self.language) or entry.get("en") or key
        try:
            return text.format(**kw) if kw else text
        except (KeyError, IndexError):
            return text
