-- The order service now learns of a succeeded payment from payment.succeeded
-- on the payment outbox, which delivers until acknowledged; the payment
-- service no longer tracks whether it told the order.
alter table payments.payments drop column order_notified;
