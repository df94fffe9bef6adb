-- A committed line can go back on hand when its paid order is cancelled.
alter table inventory.reservation_lines drop constraint reservation_lines_status_check;
alter table inventory.reservation_lines add constraint reservation_lines_status_check
    check (status in ('reserved', 'committed', 'released', 'returned'));
