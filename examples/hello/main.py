"""The hello function: greets whoever the event names."""


def handler(event, context):
    name = (event or {}).get("name", "world")
    print(f"greeting {name}")
    return {
        "message": f"Hello, {name}!",
        "function": context.function_name,
        "version": context.function_version,
        "request_id": context.request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
