-- The trace of the event an email is sent for (a W3C traceparent, when
-- traces were on): the send, whenever it happens, is a span of that trace.
alter table notifications.notifications add column traceparent text;
