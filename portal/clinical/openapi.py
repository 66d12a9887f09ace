"""OpenAPI 3.0 description of the intake API, built from the same field specifications that validate.

Served at /api/v1/openapi.json; nothing here is written by hand per field, so the document
always says what the code accepts.
"""

from __future__ import annotations

from typing import Any

from portal.clinical.intake import MAX_REPORT_BYTES, ORDER, RECORD_TYPES

SCHEMA_NAMES = {
    "mo": "MoRecord",
    "insurer": "InsurerRecord",
    "branch": "BranchRecord",
    "department": "DepartmentRecord",
    "bed_profile": "BedProfileRecord",
    "staff": "StaffRecord",
    "patient": "PatientRecord",
    "attachment": "AttachmentRecord",
    "pregnancy": "PregnancyRecord",
    "referral": "ReferralRecord",
    "hospitalisation": "HospitalisationRecord",
    "movement": "MovementRecord",
    "dispensary": "DispensaryRecord",
    "event": "EventRecord",
    "visit_report": "VisitReportRecord",
    "plan": "PlanRecord",
    "plan_person": "PlanPersonRecord",
}

DESCRIPTION = """\
Приём данных из региональной МИС мониторинга беременных (X-5): МО, СМО, подразделения (здания) МО,
отделения и их коечный фонд, медицинские работники, пациенты, прикрепления к участкам,
беременности, направления на госпитализацию, госпитализации и движения в стационаре,
диспансерное наблюдение, клинические события, подписанные в МИС протоколы визитов (PDF),
планы диспансеризации и профилактических осмотров с людьми в них.

* Каждая запись несёт идентификатор исходной системы `id`; повторная отправка записи с тем же
  `type` и `id` обновляет её и никогда не создаёт дубликат. Запись передаётся целиком:
  отсутствующее необязательное поле означает «нет значения».
* Запись ссылается на другие по их `id` — в этом же пакете (в любом порядке) или отправленные
  раньше. Записи обрабатываются в порядке зависимостей: {order}.
* Ответ содержит результат по каждой записи в порядке пакета: `stored` или `refused` с полем и
  причиной на русском языке. Корректные записи пакета сохраняются, даже если другие отклонены;
  запись, ссылающаяся на отклонённую или неизвестную, отклоняется с указанием поля ссылки.
* Пакет, который нельзя прочитать (некорректный JSON, нет списка `records`), отклоняется целиком
  с кодом 400, слишком большой — с кодом 413; в этих случаях ничего не сохраняется.
* СНИЛС проверяется только по формату (11 цифр, допускается запись `112-233-445 95`):
  запись с неверной контрольной суммой сохраняется, а ошибку покажут проверки ВИМИС и ФСС.
* Даты — `ГГГГ-ММ-ДД`, дата и время — `ГГГГ-ММ-ДДTЧЧ:ММ:СС` (местное время региона).
* Диагнозы — коды МКБ-10 латиницей: `O24.4`, `Z34.0`.
* Отделение, подразделение и врач, на которые ссылается запись, должны относиться к её МО;
  отделение и профиль коек направления — к МО госпитализации (`to_mo`).
* Протокол визита (`visit_report`) — файл PDF в base64 (`content`, не больше {report_mb} МБ) с
  открепленной подписью МИС (`signature`, необязательна). Он относится к амбулаторному приёму
  (событие `exam_primary` или `exam_repeat`) и с признаком `to_iemk` прилагается к СЭМД
  «Амбулаторный эпикриз» этого визита в ИЭМК; архив .zip не принимается.
""".format(order=", ".join(ORDER), report_mb=MAX_REPORT_BYTES // (1024 * 1024))


_TEXT = {"type": "string", "nullable": True}
_MOMENT = {"type": "string", "format": "date-time", "nullable": True}
SEMD_FEEDBACK_SCHEMA: dict[str, Any] = {  # GET /events/{source_event_id}/semd (portal/vimis/api.py)
    "type": "object",
    "required": ["event", "semd"],
    "properties": {
        "event": {"type": "string", "description": "Идентификатор мероприятия в исходной системе"},
        "semd": {
            "type": "object",
            "properties": {
                "type": {"type": "integer", "example": 17, "description": "Номер СЭМД («СЭМД 17»)"},
                "title": {"type": "string", "example": "Выписной эпикриз из родильного дома"},
                "send_number": {"type": "integer", "description": "№ отправки = номер текущей версии"},
                "status": {"type": "string", "enum": ["pending", "queued", "delivered", "passed", "error"]},
                "status_label": {"type": "string", "example": "Ошибка"},
                "last_message": {**_TEXT, "description": "Последняя запись журнала СЭМД"},
                "last_message_at": _MOMENT,
                "error": {**_TEXT, "description": "Последняя ошибка журнала, если статус error"},
                "versions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "number": {"type": "integer"},
                            "built_at": _MOMENT,
                            "sent_at": _MOMENT,
                            "answered_at": _MOMENT,
                            "result": {"type": "string", "enum": ["passed", "error"], "nullable": True},
                            "answer": {**_TEXT, "description": "Ответ ВИМИС (результат ФЛК)"},
                            "xml_url": {**_TEXT, "format": "uri", "description": "XML версии (нужен вход)"},
                        },
                    },
                },
            },
        },
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _record_schema(type_name: str) -> dict[str, Any]:
    rtype = RECORD_TYPES[type_name]
    properties: dict[str, Any] = {
        "type": {"type": "string", "enum": [type_name], "description": "Тип записи"},
        "id": {"type": "string", "maxLength": 64, "description": "Идентификатор записи в исходной системе"},
    }
    for f in rtype.fields:
        properties[f.name] = f.schema()
    required = ["type", "id"] + [f.name for f in rtype.fields if f.required]
    schema: dict[str, Any] = {
        "type": "object",
        "title": rtype.label,
        "required": required,
        "properties": properties,
        "additionalProperties": True,
    }
    if rtype.description:
        schema["description"] = rtype.description
    return schema


def build_document(max_records: int) -> dict[str, Any]:
    schemas: dict[str, Any] = {SCHEMA_NAMES[name]: _record_schema(name) for name in ORDER}
    schemas["Record"] = {
        "oneOf": [_ref(SCHEMA_NAMES[name]) for name in ORDER],
        "discriminator": {
            "propertyName": "type",
            "mapping": {name: f"#/components/schemas/{SCHEMA_NAMES[name]}" for name in ORDER},
        },
    }
    schemas["Batch"] = {
        "type": "object",
        "required": ["records"],
        "properties": {
            "records": {
                "type": "array",
                "maxItems": max_records,
                "items": _ref("Record"),
                "description": f"Записи пакета, не более {max_records}",
            }
        },
    }
    schemas["StoredResult"] = {
        "type": "object",
        "required": ["type", "id", "status"],
        "properties": {
            "type": {"type": "string", "enum": list(ORDER)},
            "id": {"type": "string"},
            "status": {"type": "string", "enum": ["stored"]},
        },
    }
    schemas["RefusedResult"] = {
        "type": "object",
        "required": ["type", "id", "status", "field", "message"],
        "properties": {
            "type": {"type": "string", "nullable": True, "description": "null, если тип не распознан"},
            "id": {"type": "string", "nullable": True},
            "status": {"type": "string", "enum": ["refused"]},
            "field": {
                "type": "string",
                "nullable": True,
                "description": "Поле с ошибкой; вложенные — через точку: policy.number, data.kas_status",
                "example": "snils",
            },
            "message": {
                "type": "string",
                "description": "Причина на русском языке",
                "example": "«СНИЛС»: ожидается 11 цифр (например, 112-233-445 95), получено «1122»",
            },
        },
    }
    schemas["BatchResult"] = {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "description": "По одному результату на запись, в порядке пакета",
                "items": {"oneOf": [_ref("StoredResult"), _ref("RefusedResult")]},
            }
        },
    }
    schemas["SemdFeedback"] = SEMD_FEEDBACK_SCHEMA
    schemas["Error"] = {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "example": "Некорректный запрос"},
            "message": {
                "type": "string",
                "example": "Тело запроса не является корректным JSON (строка 1, столбец 2).",
            },
        },
    }

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}

    return {
        "openapi": "3.0.3",
        "info": {"title": "Портал: приём данных из МИС", "version": "1.0.0", "description": DESCRIPTION},
        "servers": [{"url": "/api/v1"}],
        "paths": {
            "/records": {
                "post": {
                    "operationId": "postRecords",
                    "summary": "Принять пакет записей",
                    "security": [{"bearerAuth": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Batch")}},
                    },
                    "responses": {
                        "200": {
                            "description": "Пакет обработан: результат по каждой записи",
                            "content": {"application/json": {"schema": _ref("BatchResult")}},
                        },
                        "400": error(
                            "Некорректный JSON, не объект или нет списка records; ничего не сохранено"
                        ),
                        "401": error("Нет токена или токен недействителен"),
                        "413": error(
                            f"Больше {max_records} записей или слишком большое тело запроса; ничего не сохранено"
                        ),
                    },
                }
            },
            "/events/{source_event_id}/semd": {
                "get": {
                    "operationId": "getEventSemd",
                    "summary": "Обратная связь: СЭМД ВИМИС «АКиНЕО» по мероприятию",
                    "description": "Статус СЭМД, сформированного по триггерному мероприятию, текст ошибки "
                    "(при статусе error) и версии с ответами ВИМИС.",
                    "security": [{"bearerAuth": []}],
                    "parameters": [
                        {
                            "name": "source_event_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                            "description": "Идентификатор мероприятия (event) в исходной системе",
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "СЭМД мероприятия",
                            "content": {"application/json": {"schema": _ref("SemdFeedback")}},
                        },
                        "401": error("Нет токена или токен недействителен"),
                        "404": error("Мероприятие не найдено или по нему не формировался СЭМД"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "Это описание API",
                    "security": [],
                    "responses": {
                        "200": {"description": "Документ OpenAPI 3.0", "content": {"application/json": {}}}
                    },
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Токен выдаётся в разделе «Администрирование» портала",
                }
            },
        },
        "security": [{"bearerAuth": []}],
    }
